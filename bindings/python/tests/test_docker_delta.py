"""The Python bindings on real images: samples/app-{1,2}.tar (docker-archive) and, for
loading, a test Docker engine."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import List, Tuple

import pytest

import docker_delta as dd


def assert_ordered(events: List[Tuple[dd.Phase, int, int]], phases: List[dd.Phase]) -> None:
    """Phases in order, never revisited; done non-decreasing within a phase, <= total."""
    seen: List[dd.Phase] = []
    last = 0
    for phase, done, total in events:
        assert isinstance(phase, dd.Phase)
        if not seen or seen[-1] != phase:
            assert phase not in seen, events
            seen.append(phase)
            last = 0
        assert done >= last, events
        assert total == 0 or done <= total, events
        last = done
    assert seen == phases, events


@pytest.fixture
def package(tmp_path: Path, old_ref: str, new_ref: str) -> Path:
    out = tmp_path / "app-1-to-2.ddelta"
    dd.create(new_ref, out, old=old_ref, compression="zstd", level=3)
    return out


def test_version() -> None:
    assert dd.version() == "0.1.0"


def test_inspect(new_ref: str) -> None:
    with dd.Image(new_ref) as img:
        assert img.transport == "docker-archive"
        assert img.tags == ["sample/app:2"]
        assert img.image_id == img.config_digest
        assert img.image_id.startswith("sha256:")
        assert img.platform.startswith("linux/")
        layers = img.layers
        assert [l.index for l in layers] == list(range(len(layers)))
        img.verify()
        doc = img.to_dict()
        assert doc["layers_verified"] is True and doc["document"] == "image"
        assert [l["stored_size"] for l in doc["layers"]] == [l.stored_size for l in layers]
        assert doc["image_id"] == img.image_id
        assert doc["manifest_format"] == img.manifest_format
        assert [l["diff_id"] for l in doc["layers"]] == [l.diff_id for l in layers]
    with pytest.raises(ValueError):
        img.image_id  # closed


def test_round_trip_rebuilds_the_new_image(tmp_path: Path, old_ref: str, new_ref: str) -> None:
    events: List[Tuple[dd.Phase, int, int]] = []
    logs: List[Tuple[dd.LogLevel, str]] = []
    pkg = tmp_path / "u.ddelta"
    report = dd.create(
        new_ref, pkg, old=old_ref, method="auto", compression="xz", level=6,
        progress=lambda p, d, t: events.append((p, d, t)),
        log=lambda lvl, msg: logs.append((lvl, msg)), log_level=dd.LogLevel.DEBUG,
    )
    assert report["schema_version"] == 1 and report["document"] == "create_report"
    assert report["package_path"] == str(pkg) and report["dry_run"] is False
    assert_ordered(events, [dd.Phase.ANALYZE, dd.Phase.ENCODE, dd.Phase.WRITE])
    assert any(l == dd.LogLevel.INFO and "package written" in m for l, m in logs), logs

    with dd.Package(pkg) as p:
        info = p.info()
        assert info["compression"] == {"algorithm": "xz", "level": 6}
        # The file-aware layer's new bytes in a lane of their own (xz, as they are few: zstd
        # only past 24 MiB), its differences in another xz lane.
        assert [l["compression"]["algorithm"] for l in info["lanes"]] == ["xz", "xz", "xz"]
        assert sum(l["stored_size"] for l in info["lanes"]) == info["payload_stored_size"]
        assert p.format_version == info["format_version"] == dd.format_version_supported()
        assert p.size == pkg.stat().st_size
        with dd.Image(new_ref) as new, dd.Image(old_ref) as old:
            assert p.target_image_id == new.image_id
            assert p.base_image_id == old.image_id
            want = new.image_id
        layers = p.layers()
        assert layers[0]["method"] == "reference"
        assert layers[0]["old_layers"] == [{"index": 0, "diff_id": info["base"]["diff_ids"][0]}]
        # One description of the layers: list's, info's and the create report's.
        assert layers == info["layers"] == report["layers"]
        assert len(layers) == len(info["target"]["diff_ids"])
        p.verify()
        assert p.info()["payload_verified"] is True

    events.clear()
    out = tmp_path / "app-2-rebuilt.tar"
    applied = dd.apply(pkg, out, base=old_ref, progress=lambda p, d, t: events.append((p, d, t)))
    assert applied["image_id"] == want and applied["document"] == "apply_report"
    assert applied["output"] == str(out) and applied["base"]["image_id"] == info["base"]["image_id"]
    assert_ordered(events, [dd.Phase.VERIFY, dd.Phase.REBUILD])
    with dd.Image(out) as rebuilt:
        assert rebuilt.image_id == want
        rebuilt.verify()


def test_full_package_needs_no_base(tmp_path: Path, new_ref: str) -> None:
    pkg = tmp_path / "full.ddelta"
    report = dd.create(new_ref, pkg, method="layer", compression="gzip",
                       new_bytes_compression="none")
    assert report["base"] is None
    with dd.Package(pkg) as p:
        assert p.base_image_id is None
    out = tmp_path / "oci-out"
    dd.apply(pkg, f"oci:{out}:v2")
    with dd.Image(f"oci:{out}:v2") as img:
        assert img.image_id == report["target"]["image_id"]


def test_wrong_base_is_a_structured_error(tmp_path: Path, package: Path, old_ref: str, new_ref: str) -> None:
    out = tmp_path / "never.tar"
    with pytest.raises(dd.WrongBaseImage) as e:
        dd.apply(package, out, base=new_ref)
    err = e.value
    assert isinstance(err, dd.InvalidInput) and isinstance(err, dd.DeltaError)
    assert err.status == dd.Status.INVALID_INPUT and err.code == 3
    assert err.kind == "wrong_base_image"
    with dd.Image(old_ref) as old, dd.Image(new_ref) as new:
        assert old.image_id in (err.expected or "")
        assert new.image_id in (err.found or "")
    assert err.fields["reference"].endswith("app-2.tar")
    assert "wrong base image" in str(err)
    assert not out.exists()


def test_other_structured_errors(tmp_path: Path, package: Path, old_ref: str, new_ref: str) -> None:
    with pytest.raises(dd.OutputExists) as e:
        dd.create(new_ref, package, old=old_ref)
    assert e.value.path == str(package)

    bad = tmp_path / "bad.ddelta"
    bad.write_bytes(b"not a package at all, just some bytes" * 4)
    with pytest.raises(dd.InvalidPackage) as e2:
        dd.Package(bad)
    assert e2.value.path == str(bad)

    with pytest.raises(dd.InvalidReference):
        dd.Image("docker-archive:")
    with pytest.raises(dd.InvalidArgument):
        dd.Image("\udcff")  # not UTF-8 once encoded: refused by the library
    with pytest.raises(dd.InvalidArgument):
        dd.create(new_ref, tmp_path / "x", compression="gzip", level=42)
    with pytest.raises(dd.InvalidArgument):
        dd.create(new_ref, tmp_path / "x", new_bytes_compression="zstd", new_bytes_level=23)
    with pytest.raises(dd.InvalidArgument):
        dd.create(new_ref, tmp_path / "x", method="bsdiff")
    with pytest.raises(dd.InvalidInput) as e3:
        dd.create(new_ref, tmp_path / "x", platform="nonsense")
    assert e3.value.kind == "invalid_platform"


def test_cancel_from_progress(tmp_path: Path, old_ref: str, new_ref: str) -> None:
    out = tmp_path / "c.ddelta"
    with pytest.raises(dd.Cancelled) as e:
        dd.create(new_ref, out, old=old_ref, progress=lambda p, d, t: p != dd.Phase.ENCODE)
    assert e.value.status == dd.Status.CANCELLED
    assert list(tmp_path.iterdir()) == []


def test_exception_in_callback_propagates(tmp_path: Path, package: Path, old_ref: str) -> None:
    class Boom(Exception):
        pass

    def progress(phase: dd.Phase, done: int, total: int) -> bool:
        raise Boom(phase)

    with pytest.raises(Boom) as e:
        dd.apply(package, tmp_path / "o.tar", base=old_ref, progress=progress)
    assert isinstance(e.value.__cause__, dd.Cancelled)
    assert not (tmp_path / "o.tar").exists()


def test_handles_are_freed(samples: Path) -> None:
    # Double close and garbage collection of unclosed handles are harmless.
    img = dd.Image(str(samples / "app-1.tar"))
    img.close()
    img.close()
    dd.Image(str(samples / "app-1.tar"))
    gc.collect()


def test_load_into_daemon_and_tag(tmp_path: Path, package: Path, old_ref: str, new_ref: str,
                                  docker_host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    events: List[Tuple[dd.Phase, int, int]] = []
    tag = "dd-ffi-test/python:2"
    report = dd.apply(package, load=True, base=old_ref, tag=tag, docker_host=docker_host,
                      progress=lambda p, d, t: events.append((p, d, t)))
    assert_ordered(events, [dd.Phase.VERIFY, dd.Phase.REBUILD, dd.Phase.LOAD])
    with dd.Image(new_ref) as new:
        want = new.image_id
    assert report["image_id"] == want
    assert report["name"] == tag
    # The tag resolves to the rebuilt image in that daemon.
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    with dd.Image(f"docker-daemon:{tag}") as loaded:
        assert loaded.image_id == want
        assert tag in loaded.tags


def test_no_daemon_is_missing_dependency(package: Path, old_ref: str, tmp_path: Path) -> None:
    sock = tmp_path / "nothing.sock"
    with pytest.raises(dd.MissingDependency) as e:
        dd.apply(package, load=True, base=old_ref, docker_host=f"unix://{sock}")
    assert e.value.kind == "daemon_unavailable"
    assert e.value.fields["endpoint"].endswith("nothing.sock")


def test_remove_temporary_files_removes_what_is_being_written(
        tmp_path: Path, old_ref: str, new_ref: str) -> None:
    # While an image is being rebuilt, the output is written to a temporary file beside
    # its final name; a program exiting on a signal removes it this way. (Spools have no
    # name on disk, so there is nothing else to remove.)
    package = tmp_path / "u.ddelta"
    dd.create(new_ref, package, old=old_ref)
    out = tmp_path / "out"
    out.mkdir()
    removed: List[int] = []

    def progress(phase: dd.Phase, done: int, total: int) -> bool:
        # Once bytes are written: the output's temporary file exists.
        if phase == dd.Phase.REBUILD and done > 0 and not removed:
            removed.append(dd.remove_temporary_files())
        return True

    try:
        dd.apply(package, out / "o.tar", base=old_ref, progress=progress)
    except dd.DeltaError:
        pass  # writing on after the removal may fail; either way nothing is left
    assert removed and removed[0] >= 1, removed
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_registry_credentials_in_the_options(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The Basic test registry (scripts/registries.sh): refused without credentials (an
    empty authfile is the only place looked in), read with ``creds``; the password is in
    no error and nothing printed."""
    addr = os.environ.get("DOCKER_DELTA_TEST_REGISTRY_BASIC")
    if not addr:
        if os.environ.get("DOCKER_DELTA_REQUIRE_REGISTRIES") == "1":
            pytest.fail("DOCKER_DELTA_TEST_REGISTRY_BASIC is not set")
        pytest.skip('no test registries (eval "$(scripts/registries.sh env)")')
    user = os.environ["DOCKER_DELTA_TEST_REGISTRY_BASIC_USER"]
    password = os.environ["DOCKER_DELTA_TEST_REGISTRY_BASIC_PASS"]
    old, new = f"docker://{addr}/fixtures/app:1", f"docker://{addr}/fixtures/app:2"
    out = tmp_path / "p.ddelta"
    nowhere = tmp_path / "none.json"
    with pytest.raises(dd.Unauthorized) as e:
        dd.create(new, out, old=old, authfile=nowhere, tls_verify=False, compression="zstd", level=3)
    assert "none.json" in str(e.value) and password not in str(e.value)
    assert not out.exists()
    with pytest.raises(dd.InvalidInput):
        dd.create(new, out, creds="no-colon", tls_verify=False)
    report = dd.create(new, out, old=old, creds=f"{user}:{password}", authfile=nowhere,
                       tls_verify=False, compression="zstd", level=3)
    rebuilt = tmp_path / "app-2.tar"
    with pytest.raises(dd.Unauthorized):
        dd.apply(out, rebuilt, base=old, authfile=nowhere, tls_verify=False)
    applied = dd.apply(out, rebuilt, base=old, creds=f"{user}:{password}", tls_verify=False)
    assert applied["image_id"] == report["target"]["image_id"]
    captured = capfd.readouterr()
    assert password not in captured.out and password not in captured.err


def test_fleet_pull_by_delta_and_by_fallback(tmp_path: Path) -> None:
    """Publishes app:1 -> app:2 in the plain test registry (a copy of the fixtures under a
    repository of its own), pulls app:2 through the delta from app:1 and, with no base at
    hand, in full; without fallback, NoDelta."""
    addr = os.environ.get("DOCKER_DELTA_TEST_REGISTRY_PLAIN")
    if not addr:
        if os.environ.get("DOCKER_DELTA_REQUIRE_REGISTRIES") == "1":
            pytest.fail("DOCKER_DELTA_TEST_REGISTRY_PLAIN is not set")
        pytest.skip('no test registries (eval "$(scripts/registries.sh env)")')
    import subprocess
    import time

    repo = f"py-fleet/app-{os.getpid()}-{time.time_ns()}"
    for tag in ("1", "2"):
        subprocess.run(
            ["skopeo", "copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false",
             f"docker://{addr}/fixtures/app:{tag}", f"docker://{addr}/{repo}:{tag}"],
            check=True,
        )
    v1, v2 = f"docker://{addr}/{repo}:1", f"docker://{addr}/{repo}:2"
    published = dd.publish(v2, ["1"], tls_verify=False)
    assert [p["status"] for p in published["packages"]] == ["published"], published
    listed = dd.list_deltas(v2, tls_verify=False)
    assert len(listed["deltas"]) == 1 and listed["referrers"] == "tag", listed
    phases = []
    by_delta = dd.pull(v2, tmp_path / "by-delta.tar", base=v1, tls_verify=False,
                       progress=lambda p, done, total: phases.append(p) or True)
    assert by_delta["method"] == "delta", by_delta
    assert by_delta["transferred"]["blobs"] == by_delta["delta"]["package_size"]
    assert phases and phases[0] == dd.Phase.DOWNLOAD, phases
    with dd.Image(f"docker-archive:{tmp_path / 'by-delta.tar'}") as img:
        assert img.image_id == listed["image_id"]
    full = dd.pull(v2, tmp_path / "full.tar", tls_verify=False)
    assert full["method"] == "full" and full["fallback_reason"], full
    with dd.Image(f"docker-archive:{tmp_path / 'full.tar'}") as img:
        assert img.image_id == listed["image_id"]
    with pytest.raises(dd.NoDelta):
        dd.pull(v2, tmp_path / "none.tar", tls_verify=False, no_fallback=True)
    assert not (tmp_path / "none.tar").exists()
    # A progress callback that says stop cancels the pull: nothing written.
    with pytest.raises(dd.Cancelled):
        dd.pull(v2, tmp_path / "cancelled.tar", base=v1, tls_verify=False,
                progress=lambda p, done, total: False)
    assert not (tmp_path / "cancelled.tar").exists()
