// Package dockerdelta is the Go binding of docker-delta: ship container-image updates as
// small deltas and rebuild the new image exactly on the far side.
//
// It calls the docker-delta C library (libdocker_delta) through cgo and finds it with
// pkg-config (`docker-delta.pc`), as installed by the repository's scripts/install-c.sh:
// with a prefix other than /usr or /usr/local, set PKG_CONFIG_PATH=PREFIX/lib/pkgconfig
// (and LD_LIBRARY_PATH=PREFIX/lib to run). The module carries its own copy of the header
// (docker_delta.h), so it builds from this folder alone. At start-up it checks that the
// library it loaded is compatible with that header (same major.minor while 0.x, same
// major from 1.0) and panics with both versions if not.
//
// Long operations take a context.Context: cancelling it makes the next progress report
// stop the operation (reports come at least every MiB of work), which then fails with an
// *Error for which errors.Is(err, context.Canceled) and errors.Is(err, ErrCancelled) hold.
package dockerdelta

/*
#cgo pkg-config: docker-delta
#include <stdlib.h>
#include "docker_delta.h"

dd_status ddgo_create_callbacks(dd_create_options *o, uintptr_t h, bool progress, uint32_t log_level);
dd_status ddgo_apply_callbacks(dd_apply_options *o, uintptr_t h, bool progress, uint32_t log_level);
*/
import "C"

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"runtime/cgo"
	"strings"
	"unsafe"
)

// Version is the library's version, e.g. "0.1.0".
func Version() string { return C.GoString(C.dd_version()) }

// RemoveTemporaryFiles removes the temporary files the library is writing in this process
// (outputs not yet renamed into place, spools) and returns how many it removed. A program
// that exits on a signal (signal.Notify) calls it first: os.Exit runs no cleanup, and
// interrupted work would leave hidden files of up to an image's size beside its outputs.
// Operations still running then fail.
func RemoveTemporaryFiles() int { return int(C.dd_remove_temporary_files()) }

// FormatVersionSupported is the newest package format version the library reads (older
// ones are read too).
func FormatVersionSupported() uint32 { return uint32(C.dd_package_format_version_supported()) }

// HeaderVersion is the version of the header this package was compiled against.
const HeaderVersion = C.DOCKER_DELTA_VERSION

func init() {
	if err := checkVersion(Version(), HeaderVersion); err != nil {
		panic(err)
	}
}

// checkVersion tells whether a library of version lib can serve a module built for the
// header version header: the same major.minor while the major is 0 (a 0.x minor release
// may change the ABI), the same major from 1.0 on.
func checkVersion(lib, header string) error {
	key := func(v string) string {
		parts := strings.SplitN(v, ".", 3)
		if len(parts) < 2 {
			return v
		}
		if parts[0] == "0" {
			return parts[0] + "." + parts[1]
		}
		return parts[0]
	}
	if key(lib) != key(header) {
		return fmt.Errorf("dockerdelta: the loaded libdocker_delta is version %s, but this module "+
			"was built for %s; install the matching C library (scripts/install-c.sh)", lib, header)
	}
	return nil
}

// cstr is a C copy of s ("" gives NULL when nullable); free it with freeStr.
func cstr(s string, nullable bool) *C.char {
	if nullable && s == "" {
		return nil
	}
	return C.CString(s)
}

func freeStr(p *C.char) {
	if p != nil {
		C.free(unsafe.Pointer(p))
	}
}

// goStringOwned copies and frees an owned string from the library.
func goStringOwned(p *C.char) string {
	if p == nil {
		return ""
	}
	defer C.dd_string_free(p)
	return C.GoString(p)
}

func check(status C.dd_status, err *C.dd_error) error {
	if status == C.DD_STATUS_OK {
		return nil
	}
	return fromNative(status, err)
}

// Layer is one layer of an image.
type Layer struct {
	Index      int
	DiffID     string
	Digest     string // "" when not known without reading the layer
	MediaType  string
	StoredSize uint64 // as stored in the image's source (stored_size in the image document)
}

// Image is an opened image reference (docker-archive:, oci:, oci-archive:,
// docker-daemon:, or a path). Close it when done.
type Image struct {
	h *C.dd_image
}

// OpenImage opens the image ref names; platform ("os/arch[/variant]", "" for the host's)
// chooses from a multi-platform index. docker-daemon: references use DOCKER_HOST.
func OpenImage(ref, platform string) (*Image, error) {
	cref, cplat := cstr(ref, false), cstr(platform, true)
	defer freeStr(cref)
	defer freeStr(cplat)
	var h *C.dd_image
	var cerr *C.dd_error
	if err := check(C.dd_image_open(cref, cplat, &h, &cerr), cerr); err != nil {
		return nil, err
	}
	img := &Image{h: h}
	runtime.SetFinalizer(img, (*Image).Close)
	return img, nil
}

// Close frees the image; it may be called more than once.
func (i *Image) Close() error {
	if i.h != nil {
		C.dd_image_free(i.h)
		i.h = nil
		runtime.SetFinalizer(i, nil)
	}
	return nil
}

// Reference is the reference in canonical form.
func (i *Image) Reference() string { return C.GoString(C.dd_image_reference(i.h)) }

// Transport is docker-archive, oci, oci-archive or docker-daemon.
func (i *Image) Transport() string { return C.GoString(C.dd_image_transport(i.h)) }

// ManifestFormat is docker-archive-manifest, oci-manifest or docker-schema2.
func (i *Image) ManifestFormat() string { return C.GoString(C.dd_image_manifest_format(i.h)) }

// ID is the Docker image ID (the config digest), sha256:...
func (i *Image) ID() string { return C.GoString(C.dd_image_id(i.h)) }

// ConfigDigest is the config digest (the same as ID).
func (i *Image) ConfigDigest() string { return C.GoString(C.dd_image_config_digest(i.h)) }

// Platform is os/arch[/variant].
func (i *Image) Platform() string { return C.GoString(C.dd_image_platform(i.h)) }

// Tags are the tags the source gives the image.
func (i *Image) Tags() []string {
	n := int(C.dd_image_tag_count(i.h))
	out := make([]string, n)
	for k := 0; k < n; k++ {
		out[k] = C.GoString(C.dd_image_tag(i.h, C.size_t(k)))
	}
	return out
}

// Layers are the image's layers, base first.
func (i *Image) Layers() []Layer {
	n := int(C.dd_image_layer_count(i.h))
	out := make([]Layer, n)
	for k := 0; k < n; k++ {
		ck := C.size_t(k)
		out[k] = Layer{
			Index:      k,
			DiffID:     C.GoString(C.dd_image_layer_diff_id(i.h, ck)),
			Digest:     C.GoString(C.dd_image_layer_digest(i.h, ck)),
			MediaType:  C.GoString(C.dd_image_layer_media_type(i.h, ck)),
			StoredSize: uint64(C.dd_image_layer_size(i.h, ck)),
		}
	}
	return out
}

// Verify reads every layer and checks its digests.
func (i *Image) Verify() error {
	var cerr *C.dd_error
	return check(C.dd_image_verify(i.h, &cerr), cerr)
}

// JSON describes the image as `docker-delta inspect --json` prints it.
func (i *Image) JSON() ([]byte, error) {
	var out *C.char
	var cerr *C.dd_error
	if err := check(C.dd_image_json(i.h, &out, &cerr), cerr); err != nil {
		return nil, err
	}
	return []byte(goStringOwned(out)), nil
}

// Package is an opened delta package. Close it when done.
type Package struct {
	h *C.dd_package
}

// OpenPackage opens a package file, checking its structure and header checksum.
func OpenPackage(path string) (*Package, error) {
	cpath := cstr(path, false)
	defer freeStr(cpath)
	var h *C.dd_package
	var cerr *C.dd_error
	if err := check(C.dd_package_open(cpath, &h, &cerr), cerr); err != nil {
		return nil, err
	}
	p := &Package{h: h}
	runtime.SetFinalizer(p, (*Package).Close)
	return p, nil
}

// Close frees the package; it may be called more than once.
func (p *Package) Close() error {
	if p.h != nil {
		C.dd_package_free(p.h)
		p.h = nil
		runtime.SetFinalizer(p, nil)
	}
	return nil
}

// Verify reads the payload and checks every checksum.
func (p *Package) Verify() error {
	var cerr *C.dd_error
	return check(C.dd_package_verify(p.h, &cerr), cerr)
}

// InfoJSON is the package's metadata, the package document, as `docker-delta info --json`
// prints it (docs/JSON.md).
func (p *Package) InfoJSON() ([]byte, error) {
	var out *C.char
	var cerr *C.dd_error
	if err := check(C.dd_package_info_json(p.h, &out, &cerr), cerr); err != nil {
		return nil, err
	}
	return []byte(goStringOwned(out)), nil
}

// LayersJSON is the package_layers document, as `docker-delta list --json` prints it.
func (p *Package) LayersJSON() ([]byte, error) {
	var out *C.char
	var cerr *C.dd_error
	if err := check(C.dd_package_layers_json(p.h, &out, &cerr), cerr); err != nil {
		return nil, err
	}
	return []byte(goStringOwned(out)), nil
}

// FormatVersion is the package format version.
func (p *Package) FormatVersion() uint32 { return uint32(C.dd_package_format_version(p.h)) }

// Size is the file size in bytes.
func (p *Package) Size() uint64 { return uint64(C.dd_package_size(p.h)) }

// CreatedBy names the program that wrote the package.
func (p *Package) CreatedBy() string { return C.GoString(C.dd_package_created_by(p.h)) }

// TargetImageID is the ID of the image the package rebuilds.
func (p *Package) TargetImageID() string { return C.GoString(C.dd_package_target_image_id(p.h)) }

// BaseImageID is the ID of the image the delta was made against; ok is false for a full
// package.
func (p *Package) BaseImageID() (id string, ok bool) {
	c := C.dd_package_base_image_id(p.h)
	if c == nil {
		return "", false
	}
	return C.GoString(c), true
}

// Layers lists how each layer of the new image is rebuilt: the layers of LayersJSON's
// package_layers document (nil if it cannot be read).
func (p *Package) Layers() []PackageLayer {
	raw, err := p.LayersJSON()
	if err != nil {
		return nil
	}
	var doc struct {
		Layers []PackageLayer `json:"layers"`
	}
	if json.Unmarshal(raw, &doc) != nil {
		return nil
	}
	return doc.Layers
}

// Method is how changed layers are encoded.
type Method uint32

// The methods.
const (
	MethodAuto    Method = C.DD_METHOD_AUTO // files codec for tar layers, else best whole-layer delta
	MethodXdelta3 Method = C.DD_METHOD_XDELTA3
	MethodZstd    Method = C.DD_METHOD_ZSTD
	MethodLayer   Method = C.DD_METHOD_LAYER // ship changed layers whole
	MethodFiles   Method = C.DD_METHOD_FILES // file-aware patches against any old layer
)

// Compression is the package payload's compression.
type Compression uint32

// The compressions.
const (
	CompressionXz   Compression = C.DD_COMPRESSION_XZ // the default (zero value)
	CompressionGzip Compression = C.DD_COMPRESSION_GZIP
	CompressionZstd Compression = C.DD_COMPRESSION_ZSTD
	CompressionNone Compression = C.DD_COMPRESSION_NONE
)

// CreateOptions are Create's options; the zero value gives the command-line defaults.
type CreateOptions struct {
	Method      Method
	Compression Compression
	// Level is the compression level in the algorithm's range; 0 means its default
	// (xz 6, zstd 19, gzip 9).
	Level int
	// NewBytesCompression, if set, compresses the new bytes of file-aware layers, which the
	// payload keeps in a stream of their own, at NewBytesLevel (0: the algorithm's
	// default). Unset: zstd level 18 beside xz, else Compression.
	NewBytesCompression *Compression
	NewBytesLevel       int
	Platform            string // "" for the host's
	Force               bool
	DryRun              bool
	MaxLayerMemory      uint64 // the run's memory bound; 0: DOCKER_DELTA_MAX_MEMORY or 512 MiB
	// Registry settings for the docker:// images the call reads (and Apply's docker://
	// output), as skopeo's flags. Creds is "USER:PASSWORD" ("": looked up in AuthFile if
	// set, else $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
	// ~/.config/containers/auth.json, $DOCKER_CONFIG/config.json, with their credential
	// helpers); InsecureSkipTLSVerify turns TLS verification off and allows plain HTTP
	// (--tls-verify=false); CertDir holds extra CA certificates (*.crt).
	Creds                 Secret
	AuthFile              string
	InsecureSkipTLSVerify bool
	CertDir               string
	Progress              ProgressFunc
	Log                   LogFunc
	LogLevel              LogLevel // most detailed level passed to Log (0: LogInfo)
}

// SchemaVersion is the version of the JSON documents (docs/JSON.md) this module decodes:
// the schema_version every report carries.
const SchemaVersion = 1

// ImageSummary names an image in a report (base, target), as every docker-delta JSON
// document does.
type ImageSummary struct {
	ImageID string `json:"image_id"`
	// ManifestDigest is the digest of the manifest the image was read with; empty when it
	// had none (docker-archives) or the package does not record it (a base).
	ManifestDigest string          `json:"manifest_digest"`
	Reference      string          `json:"reference"`
	RepoTags       []string        `json:"repo_tags"`
	Platform       json.RawMessage `json:"platform"`
	DiffIDs        []string        `json:"diff_ids"`
}

// ImageIdentity is the former name of ImageSummary.
//
// Deprecated: use ImageSummary.
type ImageIdentity = ImageSummary

// OldLayer is an old layer a new layer is rebuilt from: its index in the old image and
// its diff_id.
type OldLayer struct {
	Index  int    `json:"index"`
	DiffID string `json:"diff_id"`
}

// PackageLayer is how one layer of a package's new image is rebuilt, as create, apply,
// info and list all describe it.
type PackageLayer struct {
	Index  int    `json:"index"`
	DiffID string `json:"diff_id"`
	Method string `json:"method"` // reference, xdelta3, zstd, files or full
	// OldLayers are the old layers it is rebuilt from (empty for full, and for a files
	// layer of new files only); nil only in a dry run, for a files layer, whose old
	// layers the encoder chooses while it encodes.
	OldLayers []OldLayer `json:"old_layers"`
	// DeltaSize is the uncompressed payload bytes it takes (0 for a reference, and in a
	// dry run, where the document has null).
	DeltaSize        uint64 `json:"delta_size"`
	UncompressedSize uint64 `json:"uncompressed_size"`
	StoredSize       uint64 `json:"stored_size"` // as stored in the new image's source
	MediaType        string `json:"media_type"`
}

// CreateReport is what Create did: the create_report document (`docker-delta create
// --json`).
type CreateReport struct {
	SchemaVersion int    `json:"schema_version"`
	Document      string `json:"document"` // "create_report"
	DryRun        bool   `json:"dry_run"`
	// PackagePath and PackageSize are empty and 0 for a dry run.
	PackagePath            string         `json:"package_path"`
	PackageSize            uint64         `json:"package_size"`
	Base                   *ImageSummary  `json:"base"`
	Target                 ImageSummary   `json:"target"`
	TargetStoredSize       uint64         `json:"target_stored_size"`
	TargetUncompressedSize uint64         `json:"target_uncompressed_size"`
	Layers                 []PackageLayer `json:"layers"`
	// Raw is the report's JSON.
	Raw json.RawMessage `json:"-"`
}

// ApplyReport is what Apply did: the apply_report document (`docker-delta apply --json`).
type ApplyReport struct {
	SchemaVersion int    `json:"schema_version"`
	Document      string `json:"document"` // "apply_report"
	DryRun        bool   `json:"dry_run"`
	Output        string `json:"output"`
	// LoadedInto is the Docker daemon ApplyLoad loaded the image into (Output is empty then).
	LoadedInto string `json:"loaded_into"`
	// PushedTo is the registry reference the image was pushed to (docker://HOST/NAME:TAG).
	PushedTo string `json:"pushed_to"`
	ImageID  string `json:"image_id"`
	// ManifestDigest is the digest of the OCI manifest written with the image: its ID in
	// Docker's containerd image store (ImageID, the config digest, in the classic store).
	ManifestDigest string `json:"manifest_digest"`
	Name           string `json:"name"`
	// Base is the base image used (nil for a full package applied without one).
	Base   *ImageSummary  `json:"base"`
	Layers []PackageLayer `json:"layers"`
	// Raw is the report's JSON.
	Raw json.RawMessage `json:"-"`
}

// call holds the per-call callback state and its handle.
type call struct {
	state  *callState
	handle cgo.Handle
}

func newCall(ctx context.Context, progress ProgressFunc, log LogFunc) *call {
	s := &callState{ctx: ctx, progress: progress, log: log}
	return &call{state: s, handle: cgo.NewHandle(s)}
}

// finish releases the handle, re-raises a callback's panic, and ties a cancellation to
// the context that caused it.
func (c *call) finish(err error) error {
	c.handle.Delete()
	if c.state.hasPanic {
		panic(c.state.panicked)
	}
	var de *Error
	if errors.As(err, &de) && de.Status == StatusCancelled && c.state.ctx.Err() != nil {
		de.cause = c.state.ctx.Err()
	}
	return err
}

// wantsProgress says whether the progress trampoline is needed: for the caller's
// function or to notice a cancelled context.
func wantsProgress(ctx context.Context, f ProgressFunc) bool {
	return f != nil || ctx.Done() != nil
}

func logLevel(f LogFunc, l LogLevel) C.uint32_t {
	if f == nil {
		return 0
	}
	if l == 0 {
		l = LogInfo
	}
	return C.uint32_t(l)
}

// createOptions makes the options object of Create, Push and Publish, with the
// call's callbacks installed; the caller frees it and finishes the call.
func createOptions(ctx context.Context, opts *CreateOptions) (*C.dd_create_options, *call, error) {
	if opts == nil {
		opts = &CreateOptions{}
	}
	var o *C.dd_create_options
	if st := C.dd_create_options_new(&o); st != C.DD_STATUS_OK {
		return nil, nil, fromNative(st, nil)
	}
	fail := func(err error) (*C.dd_create_options, *call, error) {
		C.dd_create_options_free(o)
		return nil, nil, err
	}
	level := C.int32_t(C.DD_LEVEL_DEFAULT)
	if opts.Level != 0 {
		level = C.int32_t(opts.Level)
	}
	cplat := cstr(opts.Platform, true)
	defer freeStr(cplat)
	var cerr *C.dd_error
	if st := C.dd_create_options_set_method(o, C.uint32_t(opts.Method)); st != C.DD_STATUS_OK {
		return fail(fromNative(st, nil))
	}
	if st := C.dd_create_options_set_compression(o, C.uint32_t(opts.Compression), level); st != C.DD_STATUS_OK {
		return fail(fromNative(st, nil))
	}
	if c := opts.NewBytesCompression; c != nil {
		level := C.int32_t(C.DD_LEVEL_DEFAULT)
		if opts.NewBytesLevel != 0 {
			level = C.int32_t(opts.NewBytesLevel)
		}
		if st := C.dd_create_options_set_new_bytes_compression(o, C.uint32_t(*c), level); st != C.DD_STATUS_OK {
			return fail(fromNative(st, nil))
		}
	}
	if err := check(C.dd_create_options_set_platform(o, cplat, &cerr), cerr); err != nil {
		return fail(err)
	}
	ccreds, cauth, ccert := cstr(string(opts.Creds), true), cstr(opts.AuthFile, true), cstr(opts.CertDir, true)
	defer freeStr(ccreds)
	defer freeStr(cauth)
	defer freeStr(ccert)
	for _, set := range []func() C.dd_status{
		func() C.dd_status { return C.dd_create_options_set_creds(o, ccreds, &cerr) },
		func() C.dd_status { return C.dd_create_options_set_authfile(o, cauth, &cerr) },
		func() C.dd_status { return C.dd_create_options_set_cert_dir(o, ccert, &cerr) },
	} {
		if err := check(set(), cerr); err != nil {
			return fail(err)
		}
	}
	C.dd_create_options_set_tls_verify(o, C.bool(!opts.InsecureSkipTLSVerify))
	C.dd_create_options_set_force(o, C.bool(opts.Force))
	C.dd_create_options_set_dry_run(o, C.bool(opts.DryRun))
	C.dd_create_options_set_max_layer_memory(o, C.uint64_t(opts.MaxLayerMemory))
	c := newCall(ctx, opts.Progress, opts.Log)
	C.ddgo_create_callbacks(o, C.uintptr_t(c.handle), C.bool(wantsProgress(ctx, opts.Progress)), logLevel(opts.Log, opts.LogLevel))
	return o, c, nil
}

// Create makes a delta package at output that rebuilds newRef from oldRef (oldRef "" for
// a full package). References are in skopeo syntax. opts may be nil.
func Create(ctx context.Context, oldRef, newRef, output string, opts *CreateOptions) (*CreateReport, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o, c, err := createOptions(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer C.dd_create_options_free(o)
	var cerr *C.dd_error
	cold, cnew, cout := cstr(oldRef, true), cstr(newRef, false), cstr(output, false)
	defer freeStr(cold)
	defer freeStr(cnew)
	defer freeStr(cout)
	var report *C.char
	st := C.dd_create(cold, cnew, cout, o, &report, &cerr)
	text := goStringOwned(report)
	if err := c.finish(check(st, cerr)); err != nil {
		return nil, err
	}
	r := &CreateReport{Raw: json.RawMessage(text)}
	if err := json.Unmarshal([]byte(text), r); err != nil {
		return nil, err
	}
	return r, nil
}

// Secret is a password or credential: fmt prints it as <redacted>.
type Secret string

// String hides the secret.
func (Secret) String() string { return "<redacted>" }

// GoString hides the secret from %#v.
func (Secret) GoString() string { return "<redacted>" }

// ApplyOptions are Apply's and ApplyLoad's options; the zero value gives the defaults.
type ApplyOptions struct {
	Tag            string // name the image NAME[:TAG] ("" : the output's or the package's tag)
	DockerHost     string // ApplyLoad's daemon ("": DOCKER_HOST)
	Platform       string
	Force          bool
	DryRun         bool
	MaxLayerMemory uint64
	// Registry settings for the docker:// images the call reads (and Apply's docker://
	// output), as skopeo's flags. Creds is "USER:PASSWORD" ("": looked up in AuthFile if
	// set, else $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
	// ~/.config/containers/auth.json, $DOCKER_CONFIG/config.json, with their credential
	// helpers); InsecureSkipTLSVerify turns TLS verification off and allows plain HTTP
	// (--tls-verify=false); CertDir holds extra CA certificates (*.crt).
	Creds                 Secret
	AuthFile              string
	InsecureSkipTLSVerify bool
	CertDir               string
	Progress              ProgressFunc
	Log                   LogFunc
	LogLevel              LogLevel
}

func applyOptions(opts *ApplyOptions) (*C.dd_apply_options, error) {
	var o *C.dd_apply_options
	if st := C.dd_apply_options_new(&o); st != C.DD_STATUS_OK {
		return nil, fromNative(st, nil)
	}
	ctag, chost, cplat := cstr(opts.Tag, true), cstr(opts.DockerHost, true), cstr(opts.Platform, true)
	defer freeStr(ctag)
	defer freeStr(chost)
	defer freeStr(cplat)
	ccreds, cauth, ccert := cstr(string(opts.Creds), true), cstr(opts.AuthFile, true), cstr(opts.CertDir, true)
	defer freeStr(ccreds)
	defer freeStr(cauth)
	defer freeStr(ccert)
	var cerr *C.dd_error
	for _, set := range []func() C.dd_status{
		func() C.dd_status { return C.dd_apply_options_set_tag(o, ctag, &cerr) },
		func() C.dd_status { return C.dd_apply_options_set_docker_host(o, chost, &cerr) },
		func() C.dd_status { return C.dd_apply_options_set_platform(o, cplat, &cerr) },
		func() C.dd_status { return C.dd_apply_options_set_creds(o, ccreds, &cerr) },
		func() C.dd_status { return C.dd_apply_options_set_authfile(o, cauth, &cerr) },
		func() C.dd_status { return C.dd_apply_options_set_cert_dir(o, ccert, &cerr) },
	} {
		if err := check(set(), cerr); err != nil {
			C.dd_apply_options_free(o)
			return nil, err
		}
	}
	C.dd_apply_options_set_force(o, C.bool(opts.Force))
	C.dd_apply_options_set_tls_verify(o, C.bool(!opts.InsecureSkipTLSVerify))
	C.dd_apply_options_set_dry_run(o, C.bool(opts.DryRun))
	C.dd_apply_options_set_max_layer_memory(o, C.uint64_t(opts.MaxLayerMemory))
	return o, nil
}

func runApply(ctx context.Context, pkg, baseRef, output string, load bool, opts *ApplyOptions) (*ApplyReport, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if opts == nil {
		opts = &ApplyOptions{}
	}
	o, err := applyOptions(opts)
	if err != nil {
		return nil, err
	}
	defer C.dd_apply_options_free(o)
	c := newCall(ctx, opts.Progress, opts.Log)
	C.ddgo_apply_callbacks(o, C.uintptr_t(c.handle), C.bool(wantsProgress(ctx, opts.Progress)), logLevel(opts.Log, opts.LogLevel))
	cpkg, cbase, cout := cstr(pkg, false), cstr(baseRef, true), cstr(output, false)
	defer freeStr(cpkg)
	defer freeStr(cbase)
	defer freeStr(cout)
	var report *C.char
	var cerr *C.dd_error
	var st C.dd_status
	if load {
		st = C.dd_apply_load(cpkg, cbase, o, &report, &cerr)
	} else {
		st = C.dd_apply(cpkg, cbase, cout, o, &report, &cerr)
	}
	text := goStringOwned(report)
	callErr := c.finish(check(st, cerr))
	if text == "" {
		return nil, callErr
	}
	r := &ApplyReport{Raw: json.RawMessage(text)}
	if err := json.Unmarshal([]byte(text), r); err != nil {
		return nil, err
	}
	// With StatusTagFailed both are returned: the image is loaded, the tag is not.
	return r, callErr
}

// Apply rebuilds the package's image from the base image baseRef ("" : none for a full
// package, else the recorded image ID in the Docker daemon) and writes it to output: a
// reference with a transport, or a path for a docker-archive that `docker load` accepts.
// A base lacking a layer the package needs fails with ErrWrongBaseImage before anything
// is written.
func Apply(ctx context.Context, pkg, baseRef, output string, opts *ApplyOptions) (*ApplyReport, error) {
	return runApply(ctx, pkg, baseRef, output, false, opts)
}

// ApplyLoad is Apply into the Docker daemon (opts.DockerHost, else DOCKER_HOST), tagged
// opts.Tag (else the package's tag). If the image was loaded but tagging failed it
// returns the report and an error matching ErrTagFailed.
func ApplyLoad(ctx context.Context, pkg, baseRef string, opts *ApplyOptions) (*ApplyReport, error) {
	return runApply(ctx, pkg, baseRef, "", true, opts)
}
