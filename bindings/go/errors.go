package dockerdelta

/*
#include "docker_delta.h"
*/
import "C"

import (
	"encoding/json"
	"fmt"
)

// Status is what a call did (dd_status). Values 0-5 are the command-line tool's exit codes.
type Status int

// The statuses.
const (
	StatusOK                Status = 0
	StatusError             Status = 1 // unexpected or internal error (I/O, a bug)
	StatusMissingDependency Status = 2 // no Docker daemon reachable
	StatusInvalidInput      Status = 3 // bad reference, image or package, wrong base image, output exists
	StatusOperationFailed   Status = 4 // the daemon refused a load, a codec failed
	StatusTagFailed         Status = 5 // loaded, but tagging failed (the report is still returned)
	StatusCancelled         Status = 6 // the progress callback (or the context) cancelled
	StatusInvalidArgument   Status = 7 // an argument was refused before any work
	StatusPanic             Status = 8 // a bug in docker-delta, caught at the library boundary
	StatusNoDelta           Status = 9 // a pull without fallback found no delta that fits
)

// String is the status's stable name (invalid_input, ...).
func (s Status) String() string {
	return C.GoString(C.dd_status_name(C.uint32_t(s)))
}

// Error is a docker-delta error with the library's structured fields.
type Error struct {
	Status   Status
	Kind     string // wrong_base_image, digest_mismatch, output_exists, cancelled, ...
	Message  string
	Path     string // the file, archive or directory concerned, if any
	Expected string // for comparisons: the recorded digest, base image, limit...
	Found    string // what was found instead
	// Fields holds every field of the library's error variant, by name.
	Fields map[string]any

	cause error // the context's error when a context cancelled the call
}

func (e *Error) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("docker-delta: %s (%v)", e.Message, e.cause)
	}
	return "docker-delta: " + e.Message
}

// Unwrap gives the context's error for a call cancelled through its context, so that
// errors.Is(err, context.Canceled) holds.
func (e *Error) Unwrap() error { return e.cause }

// Is matches the Err* kind and status sentinels:
// errors.Is(err, dockerdelta.ErrWrongBaseImage), errors.Is(err, dockerdelta.ErrInvalidInput).
func (e *Error) Is(target error) bool {
	switch t := target.(type) {
	case kindError:
		return string(t) == e.Kind
	case statusError:
		return Status(t) == e.Status
	}
	return false
}

type kindError string

func (k kindError) Error() string { return "docker-delta: " + string(k) }

type statusError Status

func (s statusError) Error() string { return "docker-delta: " + Status(s).String() }

// Sentinels for errors.Is, by kind.
var (
	ErrWrongBaseImage            error = kindError("wrong_base_image")
	ErrDigestMismatch            error = kindError("digest_mismatch")
	ErrSizeMismatch              error = kindError("size_mismatch")
	ErrInvalidPackage            error = kindError("invalid_package")
	ErrUnsupportedPackageVersion error = kindError("unsupported_package_version")
	ErrOutputExists              error = kindError("output_exists")
	ErrInvalidReference          error = kindError("invalid_reference")
	ErrInvalidPlatform           error = kindError("invalid_platform")
	ErrImageNotFound             error = kindError("image_not_found")
	ErrDaemonUnavailable         error = kindError("daemon_unavailable")
	ErrTimeout                   error = kindError("timeout")
	ErrCredentialHelper          error = kindError("credential_helper")
	ErrRegistryUnavailable       error = kindError("registry_unavailable")
	ErrUnauthorized              error = kindError("unauthorized")
	ErrRegistry                  error = kindError("registry")
	ErrUnsupportedFileType       error = kindError("unsupported_file_type")
	ErrDeflaterMismatch          error = kindError("deflater_mismatch")
	ErrTagFailed                 error = kindError("tag_failed")
	ErrNoDelta                   error = kindError("no_delta")
	ErrCancelled                 error = kindError("cancelled")
	ErrInvalidArgument           error = kindError("invalid_argument")
	ErrPanic                     error = kindError("panic")
)

// Sentinels for errors.Is, by status.
var (
	ErrInvalidInput      error = statusError(StatusInvalidInput)
	ErrMissingDependency error = statusError(StatusMissingDependency)
	ErrOperationFailed   error = statusError(StatusOperationFailed)
)

// fromNative converts and frees a dd_error. err may be nil (setters without details).
func fromNative(status C.dd_status, err *C.dd_error) *Error {
	if err == nil {
		s := Status(status)
		return &Error{Status: s, Kind: s.String(), Message: s.String()}
	}
	defer C.dd_error_free(err)
	var doc struct {
		Kind     string         `json:"kind"`
		Message  string         `json:"message"`
		Path     *string        `json:"path"`
		Expected *string        `json:"expected"`
		Found    *string        `json:"found"`
		Fields   map[string]any `json:"fields"`
	}
	e := &Error{Status: Status(C.dd_error_code(err))}
	if jerr := json.Unmarshal([]byte(C.GoString(C.dd_error_json(err))), &doc); jerr != nil {
		e.Kind = C.GoString(C.dd_error_kind(err))
		e.Message = C.GoString(C.dd_error_message(err))
		return e
	}
	e.Kind, e.Message, e.Fields = doc.Kind, doc.Message, doc.Fields
	if doc.Path != nil {
		e.Path = *doc.Path
	}
	if doc.Expected != nil {
		e.Expected = *doc.Expected
	}
	if doc.Found != nil {
		e.Found = *doc.Found
	}
	return e
}
