package dockerdelta

/*
#include <stdlib.h>
#include "docker_delta.h"

dd_status ddgo_create_callbacks(dd_create_options *o, uintptr_t h, bool progress, uint32_t log_level);
dd_status ddgo_apply_callbacks(dd_apply_options *o, uintptr_t h, bool progress, uint32_t log_level);
*/
import "C"

import (
	"context"
	"encoding/json"
	"unsafe"
)

// DeltaArtifact is a delta package stored in a registry, as its artifact's annotations
// describe it (hints for choosing: a package pulled is checked against its own header).
type DeltaArtifact struct {
	Digest        string   `json:"digest"`
	BaseImageID   string   `json:"base_image_id"`
	BaseChainID   string   `json:"base_chain_id"`
	BaseManifests []string `json:"base_manifests"`
	BaseReference string   `json:"base_reference"`
	NewImageID    string   `json:"new_image_id"`
	Platform      *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Variant      string `json:"variant"`
	} `json:"platform"`
	PackageSize   uint64  `json:"package_size"`
	Saves         *uint64 `json:"saves"`
	FormatVersion *uint32 `json:"format_version"`
	Created       string  `json:"created"`
}

// PushReport is what Push stored: the push_report document.
type PushReport struct {
	Image            string          `json:"image"`
	Subject          string          `json:"subject"`
	Artifact         string          `json:"artifact"`
	AlreadyPublished bool            `json:"already_published"`
	Referrers        string          `json:"referrers"` // "api" or "tag"
	Delta            DeltaArtifact   `json:"delta"`
	Raw              json.RawMessage `json:"-"`
}

// Published is one line of a PublishReport.
type Published struct {
	Base        string  `json:"base"`
	BaseImageID string  `json:"base_image_id"`
	Status      string  `json:"status"` // published, already_published, no_platform
	PackageSize *uint64 `json:"package_size"`
	Saves       *uint64 `json:"saves"`
	Artifact    string  `json:"artifact"`
}

// PublishReport is what Publish did: the publish_report document.
type PublishReport struct {
	Image    string          `json:"image"`
	Packages []Published     `json:"packages"`
	Raw      json.RawMessage `json:"-"`
}

// DeltaList is what ListDeltas found: the delta_list document.
type DeltaList struct {
	Image          string          `json:"image"`
	ImageID        string          `json:"image_id"`
	ManifestDigest string          `json:"manifest_digest"`
	Referrers      string          `json:"referrers"`
	FullPullSize   uint64          `json:"full_pull_size"`
	Deltas         []DeltaArtifact `json:"deltas"`
	Skipped        []struct {
		Digest string `json:"digest"`
		Reason string `json:"reason"`
	} `json:"skipped"`
	Raw json.RawMessage `json:"-"`
}

// Transferred counts the bytes a pull downloaded from the registry, by kind.
type Transferred struct {
	Manifests uint64 `json:"manifests"`
	Configs   uint64 `json:"configs"`
	Blobs     uint64 `json:"blobs"`
}

// PullReport is what Pull did: the pull_report document.
type PullReport struct {
	DryRun         bool            `json:"dry_run"`
	Image          string          `json:"image"`
	ImageID        string          `json:"image_id"`
	ManifestDigest string          `json:"manifest_digest"`
	Method         string          `json:"method"` // "delta" or "full"
	Delta          *DeltaArtifact  `json:"delta"`
	FallbackReason string          `json:"fallback_reason"`
	DeltasListed   int             `json:"deltas_listed"`
	Transferred    Transferred     `json:"transferred"`
	FullPullSize   uint64          `json:"full_pull_size"`
	LoadedInto     string          `json:"loaded_into"`
	Output         string          `json:"output"`
	Name           string          `json:"name"`
	Raw            json.RawMessage `json:"-"`
}

// PullOptions are Pull's options; the zero value loads into DOCKER_HOST's daemon, with a
// delta from what it holds, else in full.
type PullOptions struct {
	// ApplyOptions: Tag (default HOST/NAME:TAG), DockerHost, Platform, Force, DryRun
	// (choose and report, download nothing but manifests), MaxLayerMemory, Progress, Log.
	ApplyOptions
	Base       string // the old image to take deltas from ("": the daemon's images)
	Output     string // write the image here instead of loading it
	NoFallback bool   // fail with ErrNoDelta rather than pull the whole image
}

func decode[T any](text string, callErr error, r *T, raw *json.RawMessage) (*T, error) {
	if text == "" {
		return nil, callErr
	}
	*raw = json.RawMessage(text)
	if err := json.Unmarshal([]byte(text), r); err != nil {
		return nil, err
	}
	return r, callErr
}

// Push stores the package at pkg in the registry next to the image it rebuilds, imageRef
// (docker://HOST/NAME[:TAG|@DIGEST]; without a tag, the package's own), as an OCI artifact
// whose subject is that image's manifest. opts may be nil.
func Push(ctx context.Context, pkg, imageRef string, opts *CreateOptions) (*PushReport, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o, c, err := createOptions(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer C.dd_create_options_free(o)
	cpkg, cref := cstr(pkg, false), cstr(imageRef, false)
	defer freeStr(cpkg)
	defer freeStr(cref)
	var report *C.char
	var cerr *C.dd_error
	st := C.dd_push(cpkg, cref, o, &report, &cerr)
	text := goStringOwned(report)
	r := &PushReport{}
	return decode(text, c.finish(check(st, cerr)), r, &r.Raw)
}

// Publish makes a package from each old version (bases: tags or digests of the same
// repository, or docker:// references; or, with no bases, the last newest other tags) to
// imageRef, for every platform both have, and pushes it next to imageRef; pairs already
// published are skipped. opts (may be nil) says how packages are made.
func Publish(ctx context.Context, imageRef string, bases []string, last int, opts *CreateOptions) (*PublishReport, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o, c, err := createOptions(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer C.dd_create_options_free(o)
	cref := cstr(imageRef, false)
	defer freeStr(cref)
	var cbases **C.char
	if len(bases) > 0 {
		arr := C.malloc(C.size_t(len(bases)) * C.size_t(unsafe.Sizeof(uintptr(0))))
		defer C.free(arr)
		slice := unsafe.Slice((**C.char)(arr), len(bases))
		for i, b := range bases {
			slice[i] = cstr(b, false)
			defer freeStr(slice[i])
		}
		cbases = (**C.char)(arr)
	}
	var report *C.char
	var cerr *C.dd_error
	st := C.dd_publish(cref, cbases, C.size_t(len(bases)), C.uint32_t(last), o, &report, &cerr)
	text := goStringOwned(report)
	r := &PublishReport{}
	return decode(text, c.finish(check(st, cerr)), r, &r.Raw)
}

// Pull updates to imageRef (docker://HOST/NAME[:TAG|@DIGEST]) like `docker-delta pull`:
// through the smallest published delta whose base is at hand, else (unless NoFallback,
// which fails with ErrNoDelta) by pulling its layers; the image is loaded into the
// daemon and tagged, or written to opts.Output. opts may be nil.
func Pull(ctx context.Context, imageRef string, opts *PullOptions) (*PullReport, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if opts == nil {
		opts = &PullOptions{}
	}
	o, err := applyOptions(&opts.ApplyOptions)
	if err != nil {
		return nil, err
	}
	defer C.dd_apply_options_free(o)
	c := newCall(ctx, opts.Progress, opts.Log)
	C.ddgo_apply_callbacks(o, C.uintptr_t(c.handle), C.bool(wantsProgress(ctx, opts.Progress)), logLevel(opts.Log, opts.LogLevel))
	cref, cbase, cout := cstr(imageRef, false), cstr(opts.Base, true), cstr(opts.Output, true)
	defer freeStr(cref)
	defer freeStr(cbase)
	defer freeStr(cout)
	var report *C.char
	var cerr *C.dd_error
	st := C.dd_pull(cref, cbase, cout, C.bool(opts.NoFallback), o, &report, &cerr)
	text := goStringOwned(report)
	r := &PullReport{}
	return decode(text, c.finish(check(st, cerr)), r, &r.Raw)
}

// ListDeltas lists the delta packages published for imageRef, for platform ("": the
// host's). opts (may be nil) gives the registry settings (Creds, AuthFile,
// InsecureSkipTLSVerify, CertDir); its Platform is replaced by platform.
func ListDeltas(ctx context.Context, imageRef, platform string, opts *ApplyOptions) (*DeltaList, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o2 := ApplyOptions{}
	if opts != nil {
		o2 = *opts
	}
	o2.Platform = platform
	o, err := applyOptions(&o2)
	if err != nil {
		return nil, err
	}
	defer C.dd_apply_options_free(o)
	cref := cstr(imageRef, false)
	defer freeStr(cref)
	var report *C.char
	var cerr *C.dd_error
	st := C.dd_list_deltas(cref, o, &report, &cerr)
	text := goStringOwned(report)
	r := &DeltaList{}
	return decode(text, check(st, cerr), r, &r.Raw)
}
