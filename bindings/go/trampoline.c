// C side of the Go callbacks: the library calls these with the userdata it was given,
// which is a runtime/cgo.Handle value; they pass it on to the exported Go functions.
// Doing the uintptr_t <-> void * conversion here keeps unsafe pointer arithmetic out of
// the Go code.
#include "docker_delta.h"
#include "_cgo_export.h"

static bool ddgo_progress(void *userdata, dd_phase phase, uint64_t done, uint64_t total) {
    return ddgoProgress((uintptr_t)userdata, phase, done, total);
}

static void ddgo_log(void *userdata, dd_log_level level, const char *message) {
    ddgoLog((uintptr_t)userdata, level, (char *)message);
}

dd_status ddgo_create_callbacks(dd_create_options *o, uintptr_t h, bool progress, uint32_t log_level) {
    dd_status st = DD_STATUS_OK;
    if (progress) st = dd_create_options_set_progress(o, ddgo_progress, (void *)h);
    if (st == DD_STATUS_OK && log_level > 0) st = dd_create_options_set_log(o, ddgo_log, (void *)h, log_level);
    return st;
}

dd_status ddgo_apply_callbacks(dd_apply_options *o, uintptr_t h, bool progress, uint32_t log_level) {
    dd_status st = DD_STATUS_OK;
    if (progress) st = dd_apply_options_set_progress(o, ddgo_progress, (void *)h);
    if (st == DD_STATUS_OK && log_level > 0) st = dd_apply_options_set_log(o, ddgo_log, (void *)h, log_level);
    return st;
}
