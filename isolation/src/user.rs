//! Resolving a Dockerfile `USER` value against the rootfs' `/etc/passwd` and `/etc/group`.
//!
//! Everything here runs in the parent before any fork, so it may allocate freely.

use std::path::Path;

use ocibuild_snapshot::RootDir;

use super::rootfs::Placeholders;
use super::IsolationError;

/// The numeric identity a RUN command is executed as, plus its `HOME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids (passed to `setgroups`), including the primary gid.
    pub additional_gids: Vec<u32>,
    /// Home directory from the passwd entry (`/root` for root without an entry, `/` otherwise).
    pub home: String,
}

/// One parsed line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// One parsed line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The colon-separated fields of each record line of a passwd/group file that has at least
/// `min_fields` fields and a name; blank, comment and NIS (`+`/`-`) lines are skipped.
fn records(content: &str, min_fields: usize) -> impl Iterator<Item = Vec<&str>> {
    content.lines().filter_map(move |line| {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') || line.starts_with(['+', '-']) {
            return None;
        }
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= min_fields && !fields[0].is_empty()).then_some(fields)
    })
}

/// Parses passwd content; malformed, comment and NIS (`+`/`-`) lines are skipped.
pub(crate) fn parse_passwd(content: &str) -> Vec<PasswdEntry> {
    records(content, 4)
        .filter_map(|fields| {
            Some(PasswdEntry {
                name: fields[0].to_string(),
                uid: fields[2].trim().parse().ok()?,
                gid: fields[3].trim().parse().ok()?,
                home: fields.get(5).copied().unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// Parses group content; malformed, comment and NIS lines are skipped.
pub(crate) fn parse_group(content: &str) -> Vec<GroupEntry> {
    records(content, 3)
        .filter_map(|fields| {
            Some(GroupEntry {
                name: fields[0].to_string(),
                gid: fields[2].trim().parse().ok()?,
                members: fields
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Reads a rootfs database file (symlinks resolved inside the rootfs, read through
/// descriptors); missing reads as empty.
fn read_db(ph: &mut Placeholders, rootfs: &Path, inner: &str) -> Result<String, IsolationError> {
    let bytes = ph.read_file(rootfs, inner)?.unwrap_or_default();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// [`read_db`] in `root`: the file `inner`, symlinks resolved inside `root`; missing (or
/// behind something that is not a directory) reads as empty.
fn read_db_in(root: &RootDir, inner: &str) -> Result<String, IsolationError> {
    let missing = |e: &ocibuild_snapshot::Error| {
        matches!(e, ocibuild_snapshot::Error::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)))
    };
    let opened = root
        .resolve(Path::new(inner), true)
        .and_then(|rel| root.open_parent(&rel))
        .and_then(|(dir, name)| dir.open_file(&name).map(|file| (dir, name, file)));
    let (dir, name, mut file) = match opened {
        Ok(opened) => opened,
        Err(e) if missing(&e) => return Ok(String::new()),
        Err(e) => return Err(super::rootfs::fd_err(e)),
    };
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes).map_err(|source| IsolationError::Io {
        path: dir.display_path().join(name),
        source,
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Resolves a Dockerfile `USER` value (`name`, `uid`, `uid:gid`, `name:group`, ...) against
/// `rootfs/etc/passwd` and `rootfs/etc/group`, following Docker's rules: a numeric uid without
/// a passwd entry gets gid 0 and HOME `/`; a name that is not in passwd is an error;
/// supplementary groups come from `/etc/group` membership unless a group is given explicitly.
/// `None` means root.
/// Symlinks are resolved inside the rootfs, as the command would see them.
pub fn resolve_user(rootfs: &Path, user: Option<&str>) -> Result<ExecUser, IsolationError> {
    resolve_user_in(&mut Placeholders::default(), rootfs, user)
}

/// [`resolve_user`] in the rootfs `root`, read through its descriptor: a directory, or a
/// detached overlay view (`ocibuild_snapshot::StepRoot::root_dir`).
pub fn resolve_user_in_root(
    root: &RootDir,
    user: Option<&str>,
) -> Result<ExecUser, IsolationError> {
    resolve_reading(root.host_path(), user, |inner| read_db_in(root, inner))
}

/// [`resolve_user`], reading through the roots of `ph` (an overlay's view is one).
pub(crate) fn resolve_user_in(
    ph: &mut Placeholders,
    rootfs: &Path,
    user: Option<&str>,
) -> Result<ExecUser, IsolationError> {
    resolve_reading(rootfs, user, |inner| read_db(ph, rootfs, inner))
}

/// [`resolve_user`] with the databases read by `read` (given their path inside the rootfs);
/// `rootfs` names them in errors.
fn resolve_reading(
    rootfs: &Path,
    user: Option<&str>,
    mut read: impl FnMut(&str) -> Result<String, IsolationError>,
) -> Result<ExecUser, IsolationError> {
    // Only named in error messages; the files are read through `read`.
    let passwd_path = rootfs.join("etc/passwd");
    let group_path = rootfs.join("etc/group");
    let spec = user.map(str::trim).filter(|s| !s.is_empty()).unwrap_or("0");
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = parse_passwd(&read("/etc/passwd")?);
    resolve_with(
        user_part,
        group_part,
        &passwd,
        || Ok(parse_group(&read("/etc/group")?)),
        &passwd_path,
        &group_path,
    )
}

/// The pure part of [`resolve_user`], with the group database loaded lazily.
pub(crate) fn resolve_with(
    user_part: &str,
    group_part: Option<&str>,
    passwd: &[PasswdEntry],
    groups: impl FnOnce() -> Result<Vec<GroupEntry>, IsolationError>,
    passwd_path: &Path,
    group_path: &Path,
) -> Result<ExecUser, IsolationError> {
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => passwd.iter().find(|e| e.uid == uid),
        Err(_) => Some(passwd.iter().find(|e| e.name == user_part).ok_or_else(|| {
            IsolationError::UnknownUser {
                user: user_part.to_string(),
                file: passwd_path.to_path_buf(),
            }
        })?),
    };
    let uid = match entry {
        Some(e) => e.uid,
        // Non-numeric names always have an entry (checked above).
        None => user_part.parse::<u32>().unwrap_or(0),
    };
    let home = match entry {
        Some(e) if !e.home.is_empty() => e.home.clone(),
        _ if uid == 0 => "/root".to_string(),
        _ => "/".to_string(),
    };
    let groups = groups()?;
    let (gid, additional_gids) = match group_part.map(str::trim).filter(|g| !g.is_empty()) {
        Some(g) => {
            let gid = match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => groups
                    .iter()
                    .find(|e| e.name == g)
                    .map(|e| e.gid)
                    .ok_or_else(|| IsolationError::UnknownGroup {
                        group: g.to_string(),
                        file: group_path.to_path_buf(),
                    })?,
            };
            (gid, vec![gid])
        }
        None => {
            let gid = entry.map(|e| e.gid).unwrap_or(0);
            let mut gids = vec![gid];
            if let Some(e) = entry {
                for g in groups.iter().filter(|g| g.members.contains(&e.name)) {
                    if !gids.contains(&g.gid) {
                        gids.push(g.gid);
                    }
                }
            }
            (gid, gids)
        }
    };
    Ok(ExecUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "# comment\nroot:x:0:0:root:/root:/bin/sh\n\
        nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
        app:x:1000:1000::/home/app:/bin/sh\nbroken:x:notanumber:1\n+nis\n\nshort:x:5\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root,app\nnogroup:x:65534:\n\
        app:x:1000:\nextra:x:2000: app , other\nbad:x:zz:app\n";

    fn resolve(user: &str, group: Option<&str>) -> Result<ExecUser, IsolationError> {
        let passwd = parse_passwd(PASSWD);
        resolve_with(
            user,
            group,
            &passwd,
            || Ok(parse_group(GROUP)),
            Path::new("/r/etc/passwd"),
            Path::new("/r/etc/group"),
        )
    }

    #[test]
    fn parses_passwd_and_group() {
        let p = parse_passwd(PASSWD);
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[1],
            PasswdEntry {
                name: "nobody".into(),
                uid: 65534,
                gid: 65534,
                home: "/nonexistent".into()
            }
        );
        let g = parse_group(GROUP);
        assert_eq!(g.len(), 5);
        assert_eq!(g[1].members, vec!["root".to_string(), "app".to_string()]);
        assert_eq!(g[4].members, vec!["app".to_string(), "other".to_string()]);
        assert!(g[0].members.is_empty());
    }

    #[test]
    fn resolves_like_docker() {
        let root = resolve("0", None).unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        assert_eq!(root.additional_gids, vec![0, 10]);

        let app = resolve("app", None).unwrap();
        assert_eq!((app.uid, app.gid), (1000, 1000));
        assert_eq!(app.additional_gids, vec![1000, 10, 2000]);
        assert_eq!(app.home, "/home/app");

        let nobody = resolve("nobody", Some("nogroup")).unwrap();
        assert_eq!((nobody.uid, nobody.gid), (65534, 65534));
        assert_eq!(nobody.additional_gids, vec![65534]);

        let numeric = resolve("4242", None).unwrap();
        assert_eq!(
            (numeric.uid, numeric.gid, numeric.home.as_str()),
            (4242, 0, "/")
        );
        let numeric = resolve("4242", Some("77")).unwrap();
        assert_eq!((numeric.uid, numeric.gid), (4242, 77));
        let by_uid = resolve("1000", None).unwrap();
        assert_eq!(by_uid.home, "/home/app");
    }

    #[test]
    fn unknown_names_are_errors() {
        match resolve("ghost", None) {
            Err(IsolationError::UnknownUser { user, file }) => {
                assert_eq!(user, "ghost");
                assert_eq!(file, Path::new("/r/etc/passwd"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            resolve("app", Some("ghosts")),
            Err(IsolationError::UnknownGroup { .. })
        ));
    }
}
