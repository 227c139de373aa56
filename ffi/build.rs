//! Gives the shared library its SONAME, as C libraries have: `libdocker_delta.so.0.MINOR`
//! while the version is 0.x (where a minor release may break the ABI, as in Cargo's
//! semver), `libdocker_delta.so.MAJOR` from 1.0 on. The installed file is named after it
//! by `scripts/install-c.sh`; programs linked against it record the SONAME, so a later
//! incompatible release can be installed beside it. Runs nothing but this.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if matches!(os.as_str(), "macos" | "ios" | "windows") {
        return;
    }
    let major = env!("CARGO_PKG_VERSION_MAJOR");
    let minor = env!("CARGO_PKG_VERSION_MINOR");
    let abi = if major == "0" {
        format!("0.{minor}")
    } else {
        major.to_string()
    };
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libdocker_delta.so.{abi}");
}
