//! Node paths: validation, relative-to-absolute resolution and tree arithmetic.
//!
//! A valid path is made of the characters `A-Z a-z 0-9 - / _ @`, has no empty component
//! (`//`) and no trailing `/` except the root `/` itself. An absolute path starts with `/`
//! and is at most [`ABS_PATH_MAX`] bytes; any other path is relative to the caller's home
//! `/local/domain/<domid>` and is at most [`REL_PATH_MAX`] bytes. Watch paths starting with
//! `@` name special events instead (`@introduceDomain`, `@releaseDomain`).

use alloc::format;
use alloc::string::String;

use crate::wire::{XsError, ABS_PATH_MAX, REL_PATH_MAX};

/// A domain id.
pub type DomId = u16;

/// The first domain id Xen reserves for special meanings (`DOMID_FIRST_RESERVED`).
pub const DOMID_FIRST_RESERVED: u32 = 0x7ff0;

/// The special watch path fired when a domain is introduced.
pub const INTRODUCE_DOMAIN: &str = "@introduceDomain";
/// The special watch path fired when a domain is released.
pub const RELEASE_DOMAIN: &str = "@releaseDomain";

/// A path resolved to absolute form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The absolute path.
    pub absolute: String,
    /// Whether the caller gave it relative to its home.
    pub relative: bool,
}

fn valid_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'/' | b'_' | b'@')
}

/// `/local/domain/<domid>`, the home of a domain and the base of its relative paths.
pub fn domain_path(domid: DomId) -> String {
    format!("/local/domain/{domid}")
}

/// Resolves and checks a path sent by `domid`. `max_depth` limits the number of
/// components of the absolute path (for unprivileged callers).
pub fn resolve(raw: &[u8], domid: DomId, max_depth: Option<usize>) -> Result<Resolved, XsError> {
    if raw.is_empty() || !raw.iter().all(|&byte| valid_char(byte)) {
        return Err(XsError::Einval);
    }
    let text = core::str::from_utf8(raw).map_err(|_| XsError::Einval)?;
    let resolved = if text.starts_with('/') {
        if text.len() > ABS_PATH_MAX {
            return Err(XsError::Einval);
        }
        Resolved {
            absolute: String::from(text),
            relative: false,
        }
    } else {
        if text.len() > REL_PATH_MAX {
            return Err(XsError::Einval);
        }
        Resolved {
            absolute: format!("{}/{text}", domain_path(domid)),
            relative: true,
        }
    };
    let path = resolved.absolute.as_str();
    if path.contains("//") || (path.len() > 1 && path.ends_with('/')) || path.len() > ABS_PATH_MAX {
        return Err(XsError::Einval);
    }
    if let Some(max) = max_depth {
        if depth(path) > max {
            return Err(XsError::Einval);
        }
    }
    Ok(resolved)
}

/// Checks a special watch path (`@` followed by path characters).
pub fn check_special(raw: &[u8]) -> Result<String, XsError> {
    if raw.first() != Some(&b'@') || raw.len() > REL_PATH_MAX || !raw.iter().all(|&b| valid_char(b))
    {
        return Err(XsError::Einval);
    }
    core::str::from_utf8(raw)
        .map(String::from)
        .map_err(|_| XsError::Einval)
}

/// Number of components: 0 for `/`, 1 for `/local`, 3 for `/local/domain/1`.
pub fn depth(path: &str) -> usize {
    if path == "/" {
        0
    } else {
        path.bytes().filter(|&byte| byte == b'/').count()
    }
}

/// The parent of an absolute path; `None` for the root.
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(index) => Some(&path[..index]),
        None => None,
    }
}

/// The last component of an absolute path (empty for the root).
pub fn basename(path: &str) -> &str {
    match path.rfind('/') {
        Some(index) => &path[index + 1..],
        None => path,
    }
}

/// The path of child `name` under `parent`.
pub fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Whether `path` is `ancestor` or lies below it.
pub fn is_at_or_below(path: &str, ancestor: &str) -> bool {
    if ancestor == "/" {
        return path.starts_with('/');
    }
    match path.strip_prefix(ancestor) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The form of `path` a relative watch of `domid` reports: the part after
/// `/local/domain/<domid>/`. Falls back to the absolute path if it is not below the home.
pub fn relative_to_home(path: &str, domid: DomId) -> &str {
    let home = domain_path(domid);
    match path
        .strip_prefix(home.as_str())
        .and_then(|rest| rest.strip_prefix('/'))
    {
        Some(rest) if !rest.is_empty() => rest,
        _ => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_and_absolute() {
        let rel = resolve(b"device/vbd", 5, None).unwrap();
        assert_eq!(rel.absolute, "/local/domain/5/device/vbd");
        assert!(rel.relative);
        let abs = resolve(b"/a/b-c_d@e", 5, None).unwrap();
        assert_eq!(abs.absolute, "/a/b-c_d@e");
        assert!(!abs.relative);
        assert_eq!(resolve(b"/", 0, None).unwrap().absolute, "/");
    }

    #[test]
    fn rejects_bad_paths() {
        for bad in [
            &b""[..],
            b"/a//b",
            b"/a/",
            b"a/",
            b"/a b",
            b"/a.b",
            b"/\xff",
            b"//",
        ] {
            assert_eq!(resolve(bad, 1, None), Err(XsError::Einval), "{bad:?}");
        }
        let mut long = alloc::vec![b'/'];
        long.extend(core::iter::repeat_n(b'a', ABS_PATH_MAX));
        assert_eq!(resolve(&long, 1, None), Err(XsError::Einval));
        long.truncate(ABS_PATH_MAX);
        assert!(resolve(&long, 1, None).is_ok());
        let rel = alloc::vec![b'a'; REL_PATH_MAX + 1];
        assert_eq!(resolve(&rel, 1, None), Err(XsError::Einval));
        assert!(resolve(&rel[..REL_PATH_MAX], 1, None).is_ok());
    }

    #[test]
    fn depth_limit() {
        assert!(resolve(b"/a/b/c", 0, Some(3)).is_ok());
        assert_eq!(resolve(b"/a/b/c/d", 0, Some(3)), Err(XsError::Einval));
        assert_eq!(depth("/"), 0);
        assert_eq!(depth("/local/domain/1"), 3);
    }

    #[test]
    fn tree_arithmetic() {
        assert_eq!(parent("/"), None);
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(basename("/a/b"), "b");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert!(is_at_or_below("/a/b", "/a"));
        assert!(is_at_or_below("/a", "/a"));
        assert!(!is_at_or_below("/ab", "/a"));
        assert!(is_at_or_below("/x", "/"));
        assert_eq!(relative_to_home("/local/domain/3/device", 3), "device");
        assert_eq!(relative_to_home("/local/domain/3", 3), "/local/domain/3");
        assert_eq!(
            relative_to_home("/local/domain/33/x", 3),
            "/local/domain/33/x"
        );
    }

    #[test]
    fn special_paths() {
        assert_eq!(
            check_special(b"@introduceDomain").unwrap(),
            INTRODUCE_DOMAIN
        );
        assert_eq!(check_special(b"introduceDomain"), Err(XsError::Einval));
        assert_eq!(check_special(b"@a b"), Err(XsError::Einval));
    }
}
