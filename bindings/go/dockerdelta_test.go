package dockerdelta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

type event struct {
	phase       Phase
	done, total uint64
}

// samples are the repository's sample images: $DOCKER_DELTA_SAMPLES, else ../../samples
// (the module's place in the repository).
func samples(t *testing.T) (oldRef, newRef string) {
	t.Helper()
	dir := os.Getenv("DOCKER_DELTA_SAMPLES")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0)
		dir = filepath.Join(filepath.Dir(file), "..", "..", "samples")
	}
	return "docker-archive:" + filepath.Join(dir, "app-1.tar"), "docker-archive:" + filepath.Join(dir, "app-2.tar")
}

func imageID(t *testing.T, ref string) string {
	t.Helper()
	img, err := OpenImage(ref, "")
	if err != nil {
		t.Fatalf("open %s: %v", ref, err)
	}
	defer img.Close()
	return img.ID()
}

// assertOrdered: phases in order and never revisited; done non-decreasing within a phase.
func assertOrdered(t *testing.T, events []event, phases []Phase) {
	t.Helper()
	var seen []Phase
	var last uint64
	for _, e := range events {
		if len(seen) == 0 || seen[len(seen)-1] != e.phase {
			for _, p := range seen {
				if p == e.phase {
					t.Fatalf("phase %v came back: %v", e.phase, events)
				}
			}
			seen = append(seen, e.phase)
			last = 0
		}
		if e.done < last || (e.total > 0 && e.done > e.total) {
			t.Fatalf("progress out of order in %v: %v", e.phase, events)
		}
		last = e.done
	}
	if len(seen) != len(phases) {
		t.Fatalf("phases %v, want %v", seen, phases)
	}
	for i := range seen {
		if seen[i] != phases[i] {
			t.Fatalf("phases %v, want %v", seen, phases)
		}
	}
}

func makePackage(t *testing.T, dir string) string {
	t.Helper()
	oldRef, newRef := samples(t)
	out := filepath.Join(dir, "app-1-to-2.ddelta")
	if _, err := Create(context.Background(), oldRef, newRef, out, &CreateOptions{Level: 3}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestVersion(t *testing.T) {
	if Version() != HeaderVersion {
		t.Fatalf("library %s, header %s", Version(), HeaderVersion)
	}
}

func TestInspect(t *testing.T) {
	_, newRef := samples(t)
	img, err := OpenImage(newRef, "")
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if img.Transport() != "docker-archive" || img.ID() != img.ConfigDigest() || !strings.HasPrefix(img.ID(), "sha256:") {
		t.Fatalf("transport %q id %q", img.Transport(), img.ID())
	}
	if tags := img.Tags(); len(tags) != 1 || tags[0] != "sample/app:2" {
		t.Fatalf("tags %v", tags)
	}
	if err := img.Verify(); err != nil {
		t.Fatal(err)
	}
	raw, err := img.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		ImageID        string `json:"image_id"`
		ManifestFormat string `json:"manifest_format"`
		Document       string `json:"document"`
		LayersVerified bool   `json:"layers_verified"`
		Layers         []struct {
			DiffID string `json:"diff_id"`
		} `json:"layers"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	layers := img.Layers()
	if doc.Document != "image" || !doc.LayersVerified || doc.ImageID != img.ID() || doc.ManifestFormat != img.ManifestFormat() || len(doc.Layers) != len(layers) {
		t.Fatalf("json %s", raw)
	}
	for i, l := range layers {
		if l.DiffID != doc.Layers[i].DiffID || l.Index != i {
			t.Fatalf("layer %d: %+v vs %s", i, l, raw)
		}
	}
}

var gzipCompression = CompressionGzip

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	oldRef, newRef := samples(t)
	want := imageID(t, newRef)
	var events []event
	var logs []string
	pkg := filepath.Join(dir, "u.ddelta")
	report, err := Create(context.Background(), oldRef, newRef, pkg, &CreateOptions{
		Method:              MethodAuto,
		Compression:         CompressionZstd,
		Level:               3,
		NewBytesCompression: &gzipCompression,
		NewBytesLevel:       1,
		Progress: func(p Phase, done, total uint64) bool {
			events = append(events, event{p, done, total})
			return true
		},
		Log:      func(l LogLevel, m string) { logs = append(logs, m) },
		LogLevel: LogDebug,
	})
	if err != nil {
		t.Fatal(err)
	}
	if report.SchemaVersion != SchemaVersion || report.Document != "create_report" || report.DryRun ||
		report.Target.ImageID != want || report.Base == nil || report.PackagePath != pkg || report.PackageSize == 0 {
		t.Fatalf("report %s", report.Raw)
	}
	// The first layer is the old image's first: a reference to old layer 0, named by its
	// diff_id.
	if l := report.Layers[0]; l.Method != "reference" || len(l.OldLayers) != 1 ||
		l.OldLayers[0].Index != 0 || l.OldLayers[0].DiffID != report.Base.DiffIDs[0] {
		t.Fatalf("report %s", report.Raw)
	}
	assertOrdered(t, events, []Phase{PhaseAnalyze, PhaseEncode, PhaseWrite})
	if !strings.Contains(strings.Join(logs, "\n"), "package written") {
		t.Fatalf("logs %v", logs)
	}

	p, err := OpenPackage(pkg)
	if err != nil {
		t.Fatal(err)
	}
	if p.TargetImageID() != want || p.FormatVersion() != FormatVersionSupported() {
		t.Fatalf("package %s %d", p.TargetImageID(), p.FormatVersion())
	}
	if base, ok := p.BaseImageID(); !ok || base != imageID(t, oldRef) {
		t.Fatalf("base %q", base)
	}
	if l := p.Layers(); len(l) == 0 || l[0].Method != "reference" {
		t.Fatalf("layers %+v", l)
	}
	if err := p.Verify(); err != nil {
		t.Fatal(err)
	}
	info, err := p.InfoJSON()
	if err != nil || !strings.Contains(string(info), `"payload_verified":true`) {
		t.Fatalf("info %s %v", info, err)
	}
	// The file-aware layer's new bytes, in a lane of their own, as asked.
	if !strings.Contains(string(info), `"compression":{"algorithm":"gzip","level":1}`) {
		t.Fatalf("info %s: no gzip lane", info)
	}
	// list --json's document: the same layers as the create report.
	rawLayers, err := p.LayersJSON()
	if err != nil {
		t.Fatal(err)
	}
	var listed struct {
		Document string         `json:"document"`
		Layers   []PackageLayer `json:"layers"`
	}
	if err := json.Unmarshal(rawLayers, &listed); err != nil || listed.Document != "package_layers" ||
		!reflect.DeepEqual(listed.Layers, report.Layers) {
		t.Fatalf("layers %s vs report %s (%v)", rawLayers, report.Raw, err)
	}
	p.Close()
	p.Close()

	events = nil
	out := filepath.Join(dir, "app-2-rebuilt.tar")
	applied, err := Apply(context.Background(), pkg, oldRef, out, &ApplyOptions{
		Progress: func(p Phase, done, total uint64) bool {
			events = append(events, event{p, done, total})
			return true
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	assertOrdered(t, events, []Phase{PhaseVerify, PhaseRebuild})
	if applied.ImageID != want || imageID(t, out) != want {
		t.Fatalf("rebuilt %s, want %s", applied.ImageID, want)
	}
}

func TestWrongBaseIsStructured(t *testing.T) {
	dir := t.TempDir()
	pkg := makePackage(t, dir)
	oldRef, newRef := samples(t)
	out := filepath.Join(dir, "never.tar")
	_, err := Apply(context.Background(), pkg, newRef, out, nil)
	if !errors.Is(err, ErrWrongBaseImage) || !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("got %v", err)
	}
	var de *Error
	if !errors.As(err, &de) {
		t.Fatalf("not an *Error: %T", err)
	}
	if de.Status != StatusInvalidInput || de.Kind != "wrong_base_image" ||
		!strings.Contains(de.Expected, imageID(t, oldRef)) || !strings.Contains(de.Found, imageID(t, newRef)) {
		t.Fatalf("%+v", de)
	}
	if ref, _ := de.Fields["reference"].(string); !strings.HasSuffix(ref, "app-2.tar") {
		t.Fatalf("fields %v", de.Fields)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("output written: %v", err)
	}
}

func TestOtherErrors(t *testing.T) {
	dir := t.TempDir()
	pkg := makePackage(t, dir)
	oldRef, newRef := samples(t)
	_, err := Create(context.Background(), oldRef, newRef, pkg, nil)
	var de *Error
	if !errors.Is(err, ErrOutputExists) || !errors.As(err, &de) || de.Path != pkg {
		t.Fatalf("output exists: %v", err)
	}
	if _, err := OpenImage("docker-archive:", ""); !errors.Is(err, ErrInvalidReference) {
		t.Fatalf("bad reference: %v", err)
	}
	if _, err := OpenImage(newRef, "not-a-platform"); !errors.Is(err, ErrInvalidPlatform) {
		t.Fatalf("bad platform: %v", err)
	}
	if _, err := OpenImage("bad\xff", ""); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad UTF-8: %v", err)
	}
	if _, err := Create(context.Background(), "", newRef, filepath.Join(dir, "x"), &CreateOptions{Compression: CompressionGzip, Level: 42}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad level: %v", err)
	}
	bad := filepath.Join(dir, "bad.ddelta")
	os.WriteFile(bad, []byte(strings.Repeat("not a package ", 10)), 0o644)
	if _, err := OpenPackage(bad); !errors.Is(err, ErrInvalidPackage) {
		t.Fatalf("bad package: %v", err)
	}
	_, err = ApplyLoad(context.Background(), pkg, oldRef, &ApplyOptions{DockerHost: "unix://" + filepath.Join(dir, "none.sock")})
	if !errors.Is(err, ErrDaemonUnavailable) || !errors.Is(err, ErrMissingDependency) {
		t.Fatalf("no daemon: %v", err)
	}
}

func TestContextCancelStopsCreate(t *testing.T) {
	dir := t.TempDir()
	oldRef, newRef := samples(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := filepath.Join(dir, "c.ddelta")
	_, err := Create(ctx, oldRef, newRef, out, &CreateOptions{
		Progress: func(p Phase, done, total uint64) bool {
			if p == PhaseEncode {
				cancel() // as another goroutine would
			}
			return true
		},
	})
	if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrCancelled) {
		t.Fatalf("got %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("left behind: %v", entries)
	}
	if _, err := Create(ctx, oldRef, newRef, out, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("already cancelled: %v", err)
	}
}

func TestCallbackPanicIsRaisedAfterTheCall(t *testing.T) {
	dir := t.TempDir()
	oldRef, newRef := samples(t)
	defer func() {
		if r := recover(); r != "boom" {
			t.Fatalf("recovered %v", r)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Fatalf("left behind: %v", entries)
		}
	}()
	Create(context.Background(), oldRef, newRef, filepath.Join(dir, "p.ddelta"), &CreateOptions{
		Progress: func(Phase, uint64, uint64) bool { panic("boom") },
	})
	t.Fatal("no panic")
}

func TestApplyLoadTagsInTheDaemon(t *testing.T) {
	host := os.Getenv("DOCKER_DELTA_TEST_DOCKER26")
	if host == "" {
		host = os.Getenv("DOCKER_DELTA_TEST_DOCKER20")
	}
	if host == "" {
		if os.Getenv("DOCKER_DELTA_REQUIRE_ENGINES") == "1" {
			t.Fatal("DOCKER_DELTA_REQUIRE_ENGINES=1 but no test engine")
		}
		t.Skip(`no test Docker engine (eval "$(scripts/engines.sh env)")`)
	}
	dir := t.TempDir()
	pkg := makePackage(t, dir)
	oldRef, newRef := samples(t)
	want := imageID(t, newRef)
	var events []event
	tag := "dd-ffi-test/go:2"
	report, err := ApplyLoad(context.Background(), pkg, oldRef, &ApplyOptions{
		Tag:        tag,
		DockerHost: host,
		Progress: func(p Phase, done, total uint64) bool {
			events = append(events, event{p, done, total})
			return true
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	assertOrdered(t, events, []Phase{PhaseVerify, PhaseRebuild, PhaseLoad})
	if report.ImageID != want || report.Name != tag {
		t.Fatalf("report %s", report.Raw)
	}
	t.Setenv("DOCKER_HOST", host)
	img, err := OpenImage("docker-daemon:"+tag, "")
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if img.ID() != want {
		t.Fatalf("%s resolves to %s, want %s", tag, img.ID(), want)
	}
}

// While an image is being rebuilt, the output is written to a temporary file beside its
// final name; a program exiting on a signal removes it with RemoveTemporaryFiles. (Spools
// have no name on disk, so there is nothing else to remove.)
func TestRemoveTemporaryFiles(t *testing.T) {
	oldRef, newRef := samples(t)
	pkg := filepath.Join(t.TempDir(), "u.ddelta")
	if _, err := Create(context.Background(), oldRef, newRef, pkg, nil); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	removed := -1
	_, _ = Apply(context.Background(), pkg, oldRef, filepath.Join(dir, "o.tar"), &ApplyOptions{
		Progress: func(p Phase, done, total uint64) bool {
			// Once bytes are written: the output's temporary file exists.
			if p == PhaseRebuild && done > 0 && removed < 0 {
				removed = RemoveTemporaryFiles()
			}
			return true
		},
	})
	// Writing on after the removal may fail or not; either way nothing is left behind.
	if removed < 1 {
		t.Fatalf("removed %d temporary files during the rebuild", removed)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Fatalf("left behind: %s", e.Name())
		}
	}
}

func TestLoadedLibraryMatchesHeader(t *testing.T) {
	if err := checkVersion(Version(), HeaderVersion); err != nil {
		t.Fatal(err)
	}
}

func TestCheckVersionRule(t *testing.T) {
	for _, c := range []struct {
		lib, header string
		ok          bool
	}{
		{"0.1.0", "0.1.0", true},
		{"0.1.3", "0.1.0", true},
		{"0.2.0", "0.1.0", false},
		{"1.4.0", "1.0.2", true},
		{"2.0.0", "1.9.0", false},
	} {
		err := checkVersion(c.lib, c.header)
		if (err == nil) != c.ok {
			t.Errorf("checkVersion(%q, %q) = %v, want ok=%v", c.lib, c.header, err, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), c.lib) {
			t.Errorf("error %q does not name the library version %s", err, c.lib)
		}
	}
}

// TestRegistryCredentialsInOptions reads from the Basic test registry
// (scripts/registries.sh): refused without credentials (an empty AuthFile is the only
// place looked in), read with Creds; the password shows in no error and no %v/%#v.
func TestRegistryCredentialsInOptions(t *testing.T) {
	addr := os.Getenv("DOCKER_DELTA_TEST_REGISTRY_BASIC")
	if addr == "" {
		if os.Getenv("DOCKER_DELTA_REQUIRE_REGISTRIES") == "1" {
			t.Fatal("DOCKER_DELTA_TEST_REGISTRY_BASIC is not set")
		}
		t.Skip(`no test registries (eval "$(scripts/registries.sh env)")`)
	}
	user, pass := os.Getenv("DOCKER_DELTA_TEST_REGISTRY_BASIC_USER"), os.Getenv("DOCKER_DELTA_TEST_REGISTRY_BASIC_PASS")
	oldRef, newRef := "docker://"+addr+"/fixtures/app:1", "docker://"+addr+"/fixtures/app:2"
	dir := t.TempDir()
	pkg, out := filepath.Join(dir, "p.ddelta"), filepath.Join(dir, "app-2.tar")
	nowhere := filepath.Join(dir, "none.json")
	opts := &CreateOptions{Compression: CompressionZstd, Level: 3, AuthFile: nowhere, InsecureSkipTLSVerify: true}
	_, err := Create(context.Background(), oldRef, newRef, pkg, opts)
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "none.json") {
		t.Fatalf("without credentials: %v", err)
	}
	if _, err := os.Stat(pkg); !os.IsNotExist(err) {
		t.Fatalf("output written: %v", err)
	}
	opts.Creds = Secret(user + ":" + pass)
	for _, f := range []string{"%v", "%+v", "%#v"} {
		if s := fmt.Sprintf(f, opts); strings.Contains(s, pass) {
			t.Fatalf("%s shows the password: %s", f, s)
		}
	}
	created, err := Create(context.Background(), oldRef, newRef, pkg, opts)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Apply(context.Background(), pkg, oldRef, out, &ApplyOptions{AuthFile: nowhere, InsecureSkipTLSVerify: true})
	if !errors.Is(err, ErrUnauthorized) || strings.Contains(err.Error(), pass) {
		t.Fatalf("apply without credentials: %v", err)
	}
	applied, err := Apply(context.Background(), pkg, oldRef, out, &ApplyOptions{Creds: opts.Creds, InsecureSkipTLSVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if applied.ImageID != created.Target.ImageID {
		t.Fatalf("rebuilt %s, want %s", applied.ImageID, created.Target.ImageID)
	}
}

// TestFleetPullByDeltaAndByFallback publishes app:1 -> app:2 in the plain test registry
// (a copy of the fixtures under a repository of its own), then pulls app:2 through the
// delta from app:1 and, with no base at hand, in full; without fallback it fails with
// ErrNoDelta.
func TestFleetPullByDeltaAndByFallback(t *testing.T) {
	addr := os.Getenv("DOCKER_DELTA_TEST_REGISTRY_PLAIN")
	if addr == "" {
		if os.Getenv("DOCKER_DELTA_REQUIRE_REGISTRIES") == "1" {
			t.Fatal("DOCKER_DELTA_TEST_REGISTRY_PLAIN is not set")
		}
		t.Skip(`no test registries (eval "$(scripts/registries.sh env)")`)
	}
	repo := fmt.Sprintf("go-fleet/app-%d-%d", os.Getpid(), time.Now().UnixNano())
	for _, tag := range []string{"1", "2"} {
		out, err := exec.Command("skopeo", "copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false",
			"docker://"+addr+"/fixtures/app:"+tag, "docker://"+addr+"/"+repo+":"+tag).CombinedOutput()
		if err != nil {
			t.Fatalf("skopeo: %v: %s", err, out)
		}
	}
	ctx := context.Background()
	v1, v2 := "docker://"+addr+"/"+repo+":1", "docker://"+addr+"/"+repo+":2"
	published, err := Publish(ctx, v2, []string{"1"}, 0, &CreateOptions{InsecureSkipTLSVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(published.Packages) != 1 || published.Packages[0].Status != "published" {
		t.Fatalf("publish: %s", published.Raw)
	}
	list, err := ListDeltas(ctx, v2, "", &ApplyOptions{InsecureSkipTLSVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Deltas) != 1 || list.Referrers != "tag" {
		t.Fatalf("list: %s", list.Raw)
	}
	dir := t.TempDir()
	var phases []Phase
	byDelta, err := Pull(ctx, v2, &PullOptions{
		ApplyOptions: ApplyOptions{InsecureSkipTLSVerify: true, Progress: func(p Phase, done, total uint64) bool {
			if len(phases) == 0 || phases[len(phases)-1] != p {
				phases = append(phases, p)
			}
			return true
		}},
		Base:   v1,
		Output: filepath.Join(dir, "by-delta.tar"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if byDelta.Method != "delta" || byDelta.Transferred.Blobs != byDelta.Delta.PackageSize {
		t.Fatalf("by delta: %s", byDelta.Raw)
	}
	if len(phases) == 0 || phases[0] != PhaseDownload {
		t.Fatalf("phases %v, want download first", phases)
	}
	if id := imageID(t, "docker-archive:"+filepath.Join(dir, "by-delta.tar")); id != list.ImageID {
		t.Fatalf("rebuilt %s, want %s", id, list.ImageID)
	}
	full, err := Pull(ctx, v2, &PullOptions{
		ApplyOptions: ApplyOptions{InsecureSkipTLSVerify: true},
		Output:       filepath.Join(dir, "full.tar"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if full.Method != "full" || full.FallbackReason == "" {
		t.Fatalf("full: %s", full.Raw)
	}
	if id := imageID(t, "docker-archive:"+filepath.Join(dir, "full.tar")); id != list.ImageID {
		t.Fatalf("pulled %s, want %s", id, list.ImageID)
	}
	_, err = Pull(ctx, v2, &PullOptions{
		ApplyOptions: ApplyOptions{InsecureSkipTLSVerify: true},
		Output:       filepath.Join(dir, "none.tar"),
		NoFallback:   true,
	})
	var de *Error
	if !errors.Is(err, ErrNoDelta) || !errors.As(err, &de) || de.Status != StatusNoDelta {
		t.Fatalf("no fallback: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "none.tar")); !os.IsNotExist(err) {
		t.Fatalf("written without fallback: %v", err)
	}
}
