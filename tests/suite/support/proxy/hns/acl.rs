//! The POSIX-like access control of one path of a hierarchical namespace, as Azure documents it
//! for ADLS Gen2: an owner, an owning group, an access ACL (`user::`, `group::`, `other::`,
//! named `user:ID:` and `group:ID:` entries with a `mask::`), the sticky bit, and on a directory
//! a default ACL (`default:...` entries) that a new child inherits when it is created.
//!
//! Pure: parsing and printing the header forms (`x-ms-acl`, `x-ms-permissions` symbolic or
//! octal), `setAccessControl`'s changes, and what a new child gets at create time.

/// One access control entry: `[default:]kind:qualifier:rwx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub default: bool,
    /// `user`, `group`, `mask` or `other`.
    pub kind: String,
    /// An object id, or empty for the owner, owning group, mask and other.
    pub qualifier: String,
    /// Read, write, execute.
    pub bits: [bool; 3],
}

impl Entry {
    fn parse(text: &str) -> Option<Entry> {
        let (default, rest) = match text.strip_prefix("default:") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let mut parts = rest.splitn(3, ':');
        let (kind, qualifier, perms) = (parts.next()?, parts.next()?, parts.next()?);
        if !matches!(kind, "user" | "group" | "mask" | "other") {
            return None;
        }
        Some(Entry {
            default,
            kind: kind.to_owned(),
            qualifier: qualifier.to_owned(),
            bits: bits(perms)?,
        })
    }

    fn is_base(&self, kind: &str) -> bool {
        self.kind == kind && self.qualifier.is_empty()
    }

    fn print(&self) -> String {
        format!(
            "{}{}:{}:{}",
            if self.default { "default:" } else { "" },
            self.kind,
            self.qualifier,
            rwx(self.bits)
        )
    }
}

fn bits(perms: &str) -> Option<[bool; 3]> {
    let chars: Vec<char> = perms.chars().collect();
    if chars.len() != 3 {
        return None;
    }
    let bit = |c: char, on: char| match c {
        c if c == on => Some(true),
        '-' => Some(false),
        _ => None,
    };
    Some([
        bit(chars[0], 'r')?,
        bit(chars[1], 'w')?,
        bit(chars[2], 'x')?,
    ])
}

fn rwx(bits: [bool; 3]) -> String {
    let [r, w, x] = bits;
    format!(
        "{}{}{}",
        if r { 'r' } else { '-' },
        if w { 'w' } else { '-' },
        if x { 'x' } else { '-' }
    )
}

fn octal_bits(digit: u32) -> [bool; 3] {
    [digit & 4 != 0, digit & 2 != 0, digit & 1 != 0]
}

/// Why a header value was refused (Azure answers 400 `InvalidHeaderValue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

/// The access control of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessControl {
    pub owner: String,
    pub group: String,
    pub directory: bool,
    pub sticky: bool,
    /// Access entries first, then default entries, each in the order set.
    pub entries: Vec<Entry>,
}

/// The permissions a path is created with where no default ACL applies, before the umask:
/// 0777 for a directory, 0666 for a file (Path - Create, `x-ms-umask`).
fn create_mode(directory: bool) -> u32 {
    if directory {
        0o777
    } else {
        0o666
    }
}

/// The umask Azure applies when the request sets none and the parent has no default ACL.
pub const DEFAULT_UMASK: u32 = 0o027;

/// What the principal a stand-in request comes from is called: requests signed with the account
/// key (and SAS without `suoid`) act as the superuser.
pub const SUPERUSER: &str = "$superuser";

impl AccessControl {
    /// A container's root directory as a new container has it.
    pub fn root() -> AccessControl {
        AccessControl::with_mode(SUPERUSER, SUPERUSER, true, 0o750)
    }

    fn with_mode(owner: &str, group: &str, directory: bool, mode: u32) -> AccessControl {
        let base = |kind: &str, shift: u32| Entry {
            default: false,
            kind: kind.to_owned(),
            qualifier: String::new(),
            bits: octal_bits((mode >> shift) & 7),
        };
        AccessControl {
            owner: owner.to_owned(),
            group: group.to_owned(),
            directory,
            sticky: mode & 0o1000 != 0,
            entries: vec![base("user", 6), base("group", 3), base("other", 0)],
        }
    }

    /// What a new child of `parent` gets at create time: owned by `owner`, its owning group the
    /// parent's; with the parent's default ACL as its access ACL (and, for a directory, as its
    /// default ACL too), the create mode masking the base entries; without one, the create mode
    /// less `umask`.
    pub fn child_of(
        parent: &AccessControl,
        owner: &str,
        directory: bool,
        umask: u32,
    ) -> AccessControl {
        let defaults: Vec<&Entry> = parent.entries.iter().filter(|e| e.default).collect();
        if defaults.is_empty() {
            let mode = create_mode(directory) & !umask;
            return AccessControl::with_mode(owner, &parent.group, directory, mode);
        }
        let mode = create_mode(directory);
        let has_mask = defaults.iter().any(|e| e.is_base("mask"));
        let mut entries: Vec<Entry> = defaults
            .iter()
            .map(|entry| {
                let mut access = Entry {
                    default: false,
                    ..(*entry).clone()
                };
                let shift = match entry.kind.as_str() {
                    "user" if entry.qualifier.is_empty() => Some(6),
                    "group" if entry.qualifier.is_empty() && !has_mask => Some(3),
                    "mask" => Some(3),
                    "other" => Some(0),
                    _ => None,
                };
                if let Some(shift) = shift {
                    let allowed = octal_bits((mode >> shift) & 7);
                    for (bit, allow) in access.bits.iter_mut().zip(allowed) {
                        *bit = *bit && allow;
                    }
                }
                access
            })
            .collect();
        if directory {
            entries.extend(defaults.into_iter().cloned());
        }
        AccessControl {
            owner: owner.to_owned(),
            group: parent.group.clone(),
            directory,
            sticky: false,
            entries,
        }
    }

    /// `x-ms-permissions`: `rwxr-x---` (with `t`/`T` last for the sticky bit), or octal
    /// (`0750`, `1750`). With an extended ACL the group bits set the mask, as `chmod` does.
    pub fn set_permissions(&mut self, value: &str) -> Result<(), Invalid> {
        let invalid = || Invalid(format!("x-ms-permissions {value:?}"));
        let value = value.trim_end_matches('+');
        let (modes, sticky) = if value.len() == 9 && !value.chars().all(|c| c.is_ascii_digit()) {
            let (head, last) = value.split_at(8);
            let (last, sticky) = match last {
                "t" => ("x", true),
                "T" => ("-", true),
                other => (other, false),
            };
            let full = format!("{head}{last}");
            let user = bits(&full[0..3]).ok_or_else(invalid)?;
            let group = bits(&full[3..6]).ok_or_else(invalid)?;
            let other = bits(&full[6..9]).ok_or_else(invalid)?;
            ([user, group, other], sticky)
        } else if (3..=4).contains(&value.len()) && value.chars().all(|c| ('0'..='7').contains(&c))
        {
            let mode = u32::from_str_radix(value, 8).map_err(|_| invalid())?;
            let modes = [
                octal_bits((mode >> 6) & 7),
                octal_bits((mode >> 3) & 7),
                octal_bits(mode & 7),
            ];
            (modes, mode & 0o1000 != 0)
        } else {
            return Err(invalid());
        };
        let group_kind = if self.access_entry("mask").is_some() {
            "mask"
        } else {
            "group"
        };
        for (kind, bits) in [
            ("user", modes[0]),
            (group_kind, modes[1]),
            ("other", modes[2]),
        ] {
            if let Some(entry) = self
                .entries
                .iter_mut()
                .find(|e| !e.default && e.is_base(kind))
            {
                entry.bits = bits;
            }
        }
        self.sticky = sticky;
        Ok(())
    }

    /// `x-ms-acl` of `setAccessControl`: the whole ACL replaced (access and default entries);
    /// it must name the base access entries, and only a directory has a default ACL.
    pub fn set_acl(&mut self, value: &str) -> Result<(), Invalid> {
        let entries = parse_acl(value)?;
        let has = |kind: &str| entries.iter().any(|e| !e.default && e.is_base(kind));
        if !(has("user") && has("group") && has("other")) {
            return Err(Invalid(format!(
                "x-ms-acl {value:?} lacks a user::, group:: or other:: entry"
            )));
        }
        if !self.directory && entries.iter().any(|e| e.default) {
            return Err(Invalid(format!(
                "x-ms-acl {value:?}: only a directory has a default ACL"
            )));
        }
        self.entries = entries;
        Ok(())
    }

    fn access_entry(&self, kind: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| !e.default && e.is_base(kind))
    }

    /// `x-ms-permissions` as Azure answers it: `rwxr-x---`, the group bits the mask's when there
    /// is one, `t`/`T` for the sticky bit, `+` when the ACL extends the base entries.
    pub fn permissions(&self) -> String {
        let of = |kind: &str| self.access_entry(kind).map_or([false; 3], |e| e.bits);
        let group = self.access_entry("mask").map_or(of("group"), |e| e.bits);
        let other = of("other");
        let mut text = format!("{}{}", rwx(of("user")), rwx(group));
        let other_text = rwx(other);
        if self.sticky {
            text.push_str(&other_text[..2]);
            text.push(if other[2] { 't' } else { 'T' });
        } else {
            text.push_str(&other_text);
        }
        let extended = self
            .entries
            .iter()
            .any(|e| !e.default && (!e.qualifier.is_empty() || e.kind == "mask"));
        if extended {
            text.push('+');
        }
        text
    }

    /// `x-ms-acl` as Azure answers it: access entries, then default entries.
    pub fn acl(&self) -> String {
        let mut entries: Vec<&Entry> = self.entries.iter().filter(|e| !e.default).collect();
        entries.extend(self.entries.iter().filter(|e| e.default));
        entries
            .iter()
            .map(|e| e.print())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// An `x-ms-acl` value: comma-separated entries.
pub fn parse_acl(value: &str) -> Result<Vec<Entry>, Invalid> {
    value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| Entry::parse(e).ok_or_else(|| Invalid(format!("x-ms-acl entry {e:?}"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_without_default_acl_gets_the_create_mode_less_the_umask() {
        let root = AccessControl::root();
        let dir = AccessControl::child_of(&root, SUPERUSER, true, DEFAULT_UMASK);
        let file = AccessControl::child_of(&root, SUPERUSER, false, DEFAULT_UMASK);
        assert_eq!(dir.permissions(), "rwxr-x---");
        assert_eq!(file.permissions(), "rw-r-----");
        assert_eq!(file.acl(), "user::rw-,group::r--,other::---");
    }

    #[test]
    fn a_default_acl_is_inherited_at_create_time_and_masked_by_the_create_mode() {
        let mut parent = AccessControl::root();
        parent.group = "g-parent".into();
        parent
            .set_acl(
                "user::rwx,group::r-x,other::---,default:user::rwx,default:user:u-1:rwx,\
                 default:group::r-x,default:mask::rwx,default:other::--x",
            )
            .unwrap();
        let file = AccessControl::child_of(&parent, "owner-1", false, DEFAULT_UMASK);
        assert_eq!(file.owner, "owner-1");
        assert_eq!(file.group, "g-parent");
        assert_eq!(
            file.acl(),
            "user::rw-,user:u-1:rwx,group::r-x,mask::rw-,other::---"
        );
        assert_eq!(file.permissions(), "rw-rw----+");
        let dir = AccessControl::child_of(&parent, "owner-1", true, DEFAULT_UMASK);
        assert!(
            dir.acl().contains(",default:user:u-1:rwx,"),
            "{}",
            dir.acl()
        );
        assert_eq!(dir.permissions(), "rwxrwx--x+");
    }

    #[test]
    fn permissions_are_set_symbolically_or_in_octal_with_the_sticky_bit() {
        let mut acl = AccessControl::root();
        acl.set_permissions("rwxrw-r-T").unwrap();
        assert_eq!(acl.permissions(), "rwxrw-r-T");
        acl.set_permissions("1751").unwrap();
        assert_eq!(acl.permissions(), "rwxr-x--t");
        acl.set_permissions("0640").unwrap();
        assert_eq!(acl.acl(), "user::rw-,group::r--,other::---");
        assert!(acl.set_permissions("rwxq-----").is_err());
        let mut file = AccessControl::child_of(&acl, SUPERUSER, false, 0);
        assert!(file
            .set_acl("user::rw-,group::r--,other::---,default:user::rwx")
            .is_err());
        assert!(file.set_acl("user::rw-,other::---").is_err());
    }
}
