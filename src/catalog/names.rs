//! How catalog labels become NFS names, and when two names are the same.
//!
//! A label is shown as stored, except where a client could not use it:
//! `/` and NUL, the reserved `.`/`..`/empty, and labels longer than a name
//! may be (255 bytes) are given a stand-in that still reads like the label.
//! Two names are the same when their Unicode normalisation (NFC) matches,
//! and, on a case-insensitive export, their case-folded forms match too:
//! a Mac sends decomposed (NFD) names for labels the app stored composed,
//! and its own volumes ignore case.

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// Longest name a client may use (NFSv4 maxname; macOS and Linux limit a
/// path component to 255 bytes).
pub const MAX_NAME: usize = 255;

/// When two names count as one name in a folder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NameRules {
    /// Names that differ only by case are one name (as on the Mac's own
    /// volumes by default).
    pub case_insensitive: bool,
}

impl NameRules {
    /// The key under which `name` is found: its NFC form, lower-cased on a
    /// case-insensitive export.
    pub fn key(&self, name: &str) -> String {
        let nfc: String = if is_nfc_quick(name.chars()) == IsNormalized::Yes {
            name.to_string()
        } else {
            name.nfc().collect()
        };
        if self.case_insensitive {
            // Lower-casing can denormalise (e.g. 'İ'), so normalise again.
            let lower = nfc.to_lowercase();
            if is_nfc_quick(lower.chars()) == IsNormalized::Yes {
                lower
            } else {
                lower.nfc().collect()
            }
        } else {
            nfc
        }
    }
}

/// Makes a catalog label usable as one NFS path component: `/` becomes `:`
/// (what Finder shows as `/`), NUL is dropped, empty, `.` and `..` get a
/// visible stand-in, and a label over [`MAX_NAME`] bytes is cut short with
/// [`distinguish`]'s suffix, so it can be opened and stays unique.
pub fn component_for_label(label: &str, fileid: u64) -> String {
    let cleaned: String = label
        .chars()
        .filter(|c| *c != '\0')
        .map(|c| if c == '/' { ':' } else { c })
        .collect();
    match cleaned.as_str() {
        "" | "." | ".." => format!("{cleaned}_{fileid:x}"),
        _ if cleaned.len() > MAX_NAME => distinguish(&cleaned, fileid),
        _ => cleaned,
    }
}

/// `name` with ` (fileid)` appended (hex), cut at a character boundary so
/// the whole stays within [`MAX_NAME`] bytes: the name given to the second
/// of two labels that would show alike, and to over-long labels.
pub fn distinguish(name: &str, fileid: u64) -> String {
    let suffix = format!(" ({fileid:x})");
    let room = MAX_NAME - suffix.len();
    let mut cut = name.len().min(room);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &name[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nfd_and_nfc_share_a_key_and_case_only_when_asked() {
        let nfc = "Sc\u{e8}ne caf\u{e9}.mov";
        let nfd = "Sce\u{300}ne cafe\u{301}.mov";
        assert_ne!(nfc, nfd);
        let sensitive = NameRules::default();
        assert_eq!(sensitive.key(nfc), sensitive.key(nfd));
        assert_ne!(sensitive.key("A.mov"), sensitive.key("a.mov"));
        let insensitive = NameRules {
            case_insensitive: true,
        };
        assert_eq!(
            insensitive.key("SCE\u{300}NE.MOV"),
            insensitive.key("sc\u{e8}ne.mov")
        );
    }

    #[test]
    fn long_labels_are_cut_to_a_unique_usable_name() {
        let long = "\u{e9}".repeat(200); // 400 bytes
        let a = component_for_label(&long, 0xabc);
        assert!(a.len() <= MAX_NAME, "{}", a.len());
        assert!(a.ends_with(" (abc)"));
        assert_ne!(a, component_for_label(&long, 0xabd));
        let fits = "x".repeat(MAX_NAME);
        assert_eq!(component_for_label(&fits, 1), fits);
        assert_eq!(component_for_label("a/b", 1), "a:b");
        assert_eq!(component_for_label("..", 0x1f), ".._1f");
    }
}
