use super::*;

fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
    move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| OsString::from(v))
    }
}

#[test]
fn the_store_is_in_the_cache_dir_when_one_is_given() {
    let dir = store_dir_for(Some(Path::new("/cache")), true, env(&[]));
    assert_eq!(dir, Some(PathBuf::from("/cache/layer-store")));
    let dir = store_dir_for(
        Some(Path::new("/cache")),
        false,
        env(&[("HOME", "/home/u")]),
    );
    assert_eq!(dir, Some(PathBuf::from("/cache/layer-store")));
}

#[test]
fn root_uses_var_lib_whatever_the_environment() {
    let vars = [("HOME", "/root"), ("XDG_DATA_HOME", "/root/data")];
    let dir = store_dir_for(None, true, env(&vars));
    assert_eq!(dir, Some(PathBuf::from("/var/lib/ocibuild")));
}

#[test]
fn a_user_gets_the_xdg_data_home_or_local_share() {
    let vars = [("HOME", "/home/u"), ("XDG_DATA_HOME", "/data")];
    let dir = store_dir_for(None, false, env(&vars));
    assert_eq!(dir, Some(PathBuf::from("/data/ocibuild")));
    let dir = store_dir_for(None, false, env(&[("HOME", "/home/u")]));
    assert_eq!(dir, Some(PathBuf::from("/home/u/.local/share/ocibuild")));
    let relative = [("HOME", "/home/u"), ("XDG_DATA_HOME", "data")];
    let dir = store_dir_for(None, false, env(&relative));
    assert_eq!(
        dir,
        Some(PathBuf::from("/home/u/.local/share/ocibuild")),
        "a relative XDG_DATA_HOME is ignored, as the XDG spec says"
    );
    assert_eq!(store_dir_for(None, false, env(&[])), None);
}

#[test]
fn malformed_digests_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = LayerStore::open(dir.path()).unwrap();
    let good = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    for bad in ["sha256:../../etc", "e3b0c442", "sha512:abc", ""] {
        let digests = LayerDigests {
            digest: good,
            diff_id: bad,
        };
        let err = store.insert_from_reader(&b""[..], digests).unwrap_err();
        assert!(matches!(err, Error::InvalidDigest { .. }), "{err}");
        let digests = LayerDigests {
            digest: bad,
            diff_id: good,
        };
        let err = store.insert_from_reader(&b""[..], digests).unwrap_err();
        assert!(matches!(err, Error::InvalidDigest { .. }), "{err}");
        assert!(matches!(store.get(bad), Err(Error::InvalidDigest { .. })));
    }
    assert_eq!(fs::read_dir(store.locks_dir()).unwrap().count(), 0);
}

#[test]
fn only_an_identity_uid_map_is_host_root() {
    assert!(super::is_identity_map("         0          0 4294967295\n"));
    assert!(!super::is_identity_map(
        "         0       1001          1\n         1     100000      65536\n"
    ));
}
