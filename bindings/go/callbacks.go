package dockerdelta

/*
#include "docker_delta.h"
*/
import "C"

import (
	"context"
	"runtime/cgo"
)

// Phase is a step of create or apply (dd_phase). Create goes PhaseAnalyze (with an old
// image), PhaseEncode, PhaseWrite; apply goes PhaseVerify, PhaseRebuild, and PhaseLoad
// when loading into the daemon; a pull starts with PhaseDownload.
type Phase int

// The phases, in the order they happen.
const (
	PhaseAnalyze Phase = 0
	PhaseEncode  Phase = 1
	PhaseWrite   Phase = 2
	PhaseVerify  Phase = 3
	PhaseRebuild Phase = 4
	PhaseLoad    Phase = 5
	// PhaseDownload: a pull downloading its delta package (then verify, rebuild, load)
	// or, in full, the image's layers (then load).
	PhaseDownload Phase = 6
)

func (p Phase) String() string {
	switch p {
	case PhaseAnalyze:
		return "analyze"
	case PhaseEncode:
		return "encode"
	case PhaseWrite:
		return "write"
	case PhaseVerify:
		return "verify"
	case PhaseRebuild:
		return "rebuild"
	case PhaseLoad:
		return "load"
	case PhaseDownload:
		return "download"
	}
	return "unknown"
}

// LogLevel is a log message's severity (dd_log_level); 0 means LogInfo in options.
type LogLevel int

// The log levels, most severe first.
const (
	LogError LogLevel = 1
	LogWarn  LogLevel = 2
	LogInfo  LogLevel = 3
	LogDebug LogLevel = 4
	LogTrace LogLevel = 5
)

// ProgressFunc receives progress: bytes done out of total (0 if unknown) in a phase.
// Phases arrive in order and done never decreases within a phase. Return false to cancel.
type ProgressFunc func(phase Phase, done, total uint64) bool

// LogFunc receives the library's log messages.
type LogFunc func(level LogLevel, message string)

// callState is what a cgo.Handle passed as userdata points to, for one call.
type callState struct {
	ctx      context.Context
	progress ProgressFunc
	log      LogFunc
	panicked any  // a panic in a callback, re-raised after the call
	hasPanic bool // (panicked may be nil)
}

//export ddgoProgress
func ddgoProgress(h C.uintptr_t, phase C.dd_phase, done, total C.uint64_t) C.bool {
	s := cgo.Handle(h).Value().(*callState)
	if s.hasPanic || s.ctx.Err() != nil {
		return false
	}
	ok := true
	if s.progress != nil {
		func() {
			// A panic cannot unwind through the C frames below us: keep it for later.
			defer func() {
				if r := recover(); r != nil {
					s.panicked, s.hasPanic, ok = r, true, false
				}
			}()
			ok = s.progress(Phase(phase), uint64(done), uint64(total))
		}()
	}
	// A context cancelled by the callback itself takes effect now.
	return C.bool(ok && s.ctx.Err() == nil)
}

//export ddgoLog
func ddgoLog(h C.uintptr_t, level C.dd_log_level, message *C.char) {
	s := cgo.Handle(h).Value().(*callState)
	if s.log == nil || s.hasPanic {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			s.panicked, s.hasPanic = r, true
		}
	}()
	s.log(LogLevel(level), C.GoString(message))
}
