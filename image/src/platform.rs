//! Platforms (`os/architecture[/variant]`) as oci-spec's [`Platform`]: making them,
//! naming them, and telling whether an index entry's platform satisfies a requested one.

pub use oci_spec::image::{Arch, Os, Platform};

/// A platform with `os`, `architecture` and, if given, `variant`.
pub fn platform(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
    let mut p = Platform::default();
    p.set_os(Os::from(os));
    p.set_architecture(Arch::from(architecture));
    p.set_variant(variant.map(str::to_string));
    p
}

/// `linux/amd64`.
pub fn linux_amd64() -> Platform {
    platform("linux", "amd64", None)
}

/// The GOARCH-style name of the architecture this process runs on (`amd64`, `arm64`, …).
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// `linux` on the architecture this process runs on.
pub fn linux_host() -> Platform {
    platform("linux", host_architecture(), None)
}

/// `os/architecture[/variant]`, as `--platform` takes it.
pub fn name(p: &Platform) -> String {
    match p.variant() {
        Some(v) => format!("{}/{}/{v}", p.os(), p.architecture()),
        None => format!("{}/{}", p.os(), p.architecture()),
    }
}

/// Whether an index entry for `have` satisfies the requested platform `want`: os and
/// architecture equal, and the variant equal when `want` names one (`arm64` without a
/// variant counts as `v8`).
pub fn matches(want: &Platform, have: &Platform) -> bool {
    if want.os() != have.os() || want.architecture() != have.architecture() {
        return false;
    }
    match want.variant() {
        None => true,
        Some(wanted) => {
            let implied = (*have.architecture() == Arch::ARM64).then_some("v8");
            have.variant().as_deref().or(implied) == Some(wanted.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_match_on_os_architecture_and_a_wanted_variant() {
        let amd = linux_amd64();
        let arm = platform("linux", "arm64", None);
        assert!(matches(&amd, &linux_amd64()));
        assert!(!matches(&amd, &arm));
        let want_v8 = platform("linux", "arm64", Some("v8"));
        assert!(matches(&want_v8, &arm));
        let v9 = platform("linux", "arm64", Some("v9"));
        assert!(!matches(&want_v8, &v9));
        assert!(matches(&arm, &v9));
        assert_eq!(name(&want_v8), "linux/arm64/v8");
        assert_eq!(name(&amd), "linux/amd64");
        assert_eq!(name(&platform("linux", "riscv64", None)), "linux/riscv64");
    }
}
