//! Link mosix-restore as a static, no-libc, non-PIE executable whose text
//! starts at the restorer window libmosix reserves in every managed
//! process (`layout::RESTORER_BASE`), so it never collides with an image.

fn main() {
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--image-base=0x100000000000",
        "-Wl,--build-id=none",
        "-Wl,-z,noexecstack",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
