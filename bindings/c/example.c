/*
 * docker-delta from C: inspect an image, create a delta, read the package, apply it,
 * check the rebuilt image ID; and the error path of a wrong base image.
 *
 *   example happy OLD.tar NEW.tar WORKDIR    exit 0 when the rebuilt image has NEW's ID
 *   example error OLD.tar NEW.tar WORKDIR    exit 0 when applying to the wrong base fails
 *                                            with a structured wrong_base_image error
 *
 * Build: cc -std=c11 -Wall -I include bindings/c/example.c -L target/debug -ldocker_delta
 * Every handle, error and owned string is freed, so valgrind reports no leaks on either
 * path (scripts/test.sh c runs both under valgrind --leak-check=full).
 */
#define _POSIX_C_SOURCE 200809L /* strdup */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "docker_delta.h"

/* Progress events seen during one call, checked for order. */
struct progress_log {
    int phases[16];
    int nphases;
    uint64_t last_done;
    int events;
    int out_of_order;
};

static bool on_progress(void *userdata, dd_phase phase, uint64_t done, uint64_t total) {
    struct progress_log *p = userdata;
    p->events++;
    if (p->nphases == 0 || p->phases[p->nphases - 1] != (int)phase) {
        for (int i = 0; i < p->nphases; i++)
            if (p->phases[i] >= (int)phase) p->out_of_order = 1; /* phases only move on */
        if (p->nphases < 16) p->phases[p->nphases++] = (int)phase;
        p->last_done = 0;
    }
    if (done < p->last_done || (total > 0 && done > total)) p->out_of_order = 1;
    p->last_done = done;
    return true; /* false would cancel */
}

static void on_log(void *userdata, dd_log_level level, const char *message) {
    (void)userdata;
    fprintf(stderr, "  [log %d] %s\n", (int)level, message);
}

/* Prints an error's details and frees it. */
static void print_error(const char *what, dd_status st, dd_error *err) {
    fprintf(stderr, "%s failed: status %d (%s)\n", what, (int)st, dd_status_name((uint32_t)st));
    if (err) {
        const char *path = dd_error_path(err);
        fprintf(stderr, "  kind:    %s\n  message: %s\n", dd_error_kind(err), dd_error_message(err));
        if (path) fprintf(stderr, "  path:    %s\n", path);
        dd_error_free(err);
    }
}

/* The image ID of an image reference, as an owned malloc'd string (NULL on error). */
static char *image_id_of(const char *ref) {
    dd_image *img = NULL;
    dd_error *err = NULL;
    dd_status st = dd_image_open(ref, NULL, &img, &err);
    if (st != DD_STATUS_OK) {
        print_error("dd_image_open", st, err);
        return NULL;
    }
    char *id = strdup(dd_image_id(img));
    dd_image_free(img);
    return id;
}

static int inspect(const char *ref) {
    dd_image *img = NULL;
    dd_error *err = NULL;
    dd_status st = dd_image_open(ref, NULL, &img, &err);
    if (st != DD_STATUS_OK) {
        print_error("dd_image_open", st, err);
        return 1;
    }
    printf("image %s\n  transport %s, manifest %s, platform %s\n  id %s\n",
           dd_image_reference(img), dd_image_transport(img), dd_image_manifest_format(img),
           dd_image_platform(img), dd_image_id(img));
    for (size_t i = 0; i < dd_image_tag_count(img); i++) printf("  tag %s\n", dd_image_tag(img, i));
    for (size_t i = 0; i < dd_image_layer_count(img); i++)
        printf("  layer %zu: %s, %llu bytes, %s\n", i, dd_image_layer_diff_id(img, i),
               (unsigned long long)dd_image_layer_size(img, i), dd_image_layer_media_type(img, i));
    st = dd_image_verify(img, &err);
    if (st != DD_STATUS_OK) {
        print_error("dd_image_verify", st, err);
        dd_image_free(img);
        return 1;
    }
    char *json = NULL;
    st = dd_image_json(img, &json, &err);
    if (st != DD_STATUS_OK) {
        print_error("dd_image_json", st, err);
        dd_image_free(img);
        return 1;
    }
    printf("  json: %.120s...\n", json);
    dd_string_free(json);
    dd_image_free(img);
    return 0;
}

static int create_delta(const char *old_ref, const char *new_ref, const char *out) {
    dd_create_options *opts = NULL;
    dd_error *err = NULL;
    struct progress_log progress = {0};
    if (dd_create_options_new(&opts) != DD_STATUS_OK) return 1;
    dd_create_options_set_method(opts, DD_METHOD_AUTO);
    dd_create_options_set_compression(opts, DD_COMPRESSION_ZSTD, 3);
    dd_create_options_set_force(opts, true);
    dd_create_options_set_progress(opts, on_progress, &progress);
    dd_create_options_set_log(opts, on_log, NULL, DD_LOG_LEVEL_INFO);
    char *report = NULL;
    dd_status st = dd_create(old_ref, new_ref, out, opts, &report, &err);
    dd_create_options_free(opts);
    if (st != DD_STATUS_OK) {
        print_error("dd_create", st, err);
        return 1;
    }
    printf("created %s: %.100s...\n", out, report);
    dd_string_free(report);
    printf("  %d progress events over %d phases%s\n", progress.events, progress.nphases,
           progress.out_of_order ? " OUT OF ORDER" : "");
    return progress.out_of_order || progress.nphases == 0;
}

static int show_package(const char *path) {
    dd_package *pkg = NULL;
    dd_error *err = NULL;
    dd_status st = dd_package_open(path, &pkg, &err);
    if (st != DD_STATUS_OK) {
        print_error("dd_package_open", st, err);
        return 1;
    }
    printf("package format %u, %llu bytes, by %s\n  base %s\n  target %s\n",
           dd_package_format_version(pkg), (unsigned long long)dd_package_size(pkg),
           dd_package_created_by(pkg), dd_package_base_image_id(pkg),
           dd_package_target_image_id(pkg));
    for (size_t i = 0; i < dd_package_layer_count(pkg); i++)
        printf("  layer %zu: %s %llu bytes (delta %llu)\n", i, dd_package_layer_method(pkg, i),
               (unsigned long long)dd_package_layer_size(pkg, i),
               (unsigned long long)dd_package_layer_delta_size(pkg, i));
    char *info = NULL, *layers = NULL;
    int rc = 0;
    if ((st = dd_package_verify(pkg, &err)) != DD_STATUS_OK ||
        (st = dd_package_info_json(pkg, &info, &err)) != DD_STATUS_OK ||
        (st = dd_package_layers_json(pkg, &layers, &err)) != DD_STATUS_OK) {
        print_error("package", st, err);
        rc = 1;
    } else {
        printf("  info: %.100s...\n  layers: %.100s...\n", info, layers);
    }
    dd_string_free(info);
    dd_string_free(layers);
    dd_package_free(pkg);
    return rc;
}

static int happy(const char *old_tar, const char *new_tar, const char *dir) {
    char old_ref[4096], new_ref[4096], pkg[4096], out[4096];
    snprintf(old_ref, sizeof old_ref, "docker-archive:%s", old_tar);
    snprintf(new_ref, sizeof new_ref, "docker-archive:%s", new_tar);
    snprintf(pkg, sizeof pkg, "%s/c-example.ddelta", dir);
    snprintf(out, sizeof out, "%s/c-example-rebuilt.tar", dir);

    printf("docker-delta %s (header %s)\n", dd_version(), DOCKER_DELTA_VERSION);
    if (strcmp(dd_version(), DOCKER_DELTA_VERSION) != 0) return 1;
    if (inspect(new_ref)) return 1;
    if (create_delta(old_ref, new_ref, pkg)) return 1;
    if (show_package(pkg)) return 1;

    dd_apply_options *opts = NULL;
    dd_error *err = NULL;
    struct progress_log progress = {0};
    dd_apply_options_new(&opts);
    dd_apply_options_set_force(opts, true);
    dd_apply_options_set_progress(opts, on_progress, &progress);
    char *report = NULL;
    dd_status st = dd_apply(pkg, old_ref, out, opts, &report, &err);
    dd_apply_options_free(opts);
    if (st != DD_STATUS_OK) {
        print_error("dd_apply", st, err);
        return 1;
    }
    printf("applied: %.100s...\n", report);
    dd_string_free(report);
    if (progress.out_of_order || progress.nphases != 2) {
        fprintf(stderr, "apply progress: %d phases, out of order %d\n", progress.nphases,
                progress.out_of_order);
        return 1;
    }

    char *want = image_id_of(new_ref), *got = image_id_of(out);
    int same = want && got && strcmp(want, got) == 0;
    printf("rebuilt image %s %s %s\n", got ? got : "?", same ? "==" : "!=", want ? want : "?");
    free(want);
    free(got);
    return !same;
}

static int error_path(const char *old_tar, const char *new_tar, const char *dir) {
    char old_ref[4096], new_ref[4096], pkg[4096], out[4096];
    snprintf(old_ref, sizeof old_ref, "docker-archive:%s", old_tar);
    snprintf(new_ref, sizeof new_ref, "docker-archive:%s", new_tar);
    snprintf(pkg, sizeof pkg, "%s/c-example-err.ddelta", dir);
    snprintf(out, sizeof out, "%s/c-example-never.tar", dir);
    if (create_delta(old_ref, new_ref, pkg)) return 1;

    /* Invalid arguments are statuses, not crashes. */
    dd_error *err = NULL;
    dd_status st = dd_apply(NULL, NULL, out, NULL, NULL, &err);
    if (st != DD_STATUS_INVALID_ARGUMENT || strcmp(dd_error_kind(err), "invalid_argument") != 0) {
        fprintf(stderr, "NULL package: status %d\n", (int)st);
        dd_error_free(err);
        return 1;
    }
    dd_error_free(err);

    /* The new image as the base: it lacks the old layers the delta needs. */
    char *report = NULL;
    st = dd_apply(pkg, new_ref, out, NULL, &report, &err);
    if (st != DD_STATUS_INVALID_INPUT || report != NULL) {
        fprintf(stderr, "wrong base: expected DD_STATUS_INVALID_INPUT, got %d\n", (int)st);
        dd_string_free(report);
        dd_error_free(err);
        return 1;
    }
    printf("wrong base refused as expected:\n  code %d (%s)\n  kind %s\n  message %s\n"
           "  expected %s\n  found %s\n  json %s\n",
           (int)dd_error_code(err), dd_status_name((uint32_t)dd_error_code(err)),
           dd_error_kind(err), dd_error_message(err), dd_error_expected(err),
           dd_error_found(err), dd_error_json(err));
    int ok = strcmp(dd_error_kind(err), "wrong_base_image") == 0 && dd_error_expected(err) &&
             dd_error_found(err) && strstr(dd_error_json(err), "\"reference\"");
    dd_error_free(err);

    /* A missing package names its path. */
    st = dd_apply("/nonexistent/x.ddelta", old_ref, out, NULL, NULL, &err);
    const char *path = dd_error_path(err);
    ok = ok && st != DD_STATUS_OK && path && strcmp(path, "/nonexistent/x.ddelta") == 0;
    dd_error_free(err);
    return !ok;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s happy|error OLD.tar NEW.tar WORKDIR\n", argv[0]);
        return 2;
    }
    int rc = strcmp(argv[1], "happy") == 0 ? happy(argv[2], argv[3], argv[4])
             : strcmp(argv[1], "error") == 0 ? error_path(argv[2], argv[3], argv[4])
                                             : 2;
    printf("%s path: %s\n", argv[1], rc == 0 ? "ok" : "FAILED");
    return rc;
}
