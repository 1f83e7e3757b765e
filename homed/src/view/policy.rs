//! Which of the home's paths the view shows (`[view] exports` and `local`).

use std::path::{Path, PathBuf};

/// How the view treats one home path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Inside an export and not under a more specific `local` path: served.
    Visible,
    /// A directory on the way to an export (e.g. `/home` for export
    /// `/home/ann`): it can be listed and passed through, but shows only
    /// the names that lead to exports and cannot be changed.
    Passage,
    /// Not served: lookups say ENOENT, creations EACCES.
    Hidden,
}

/// The exported set of one home.
#[derive(Debug, Clone)]
pub struct Policy {
    exports: Vec<PathBuf>,
    local: Vec<PathBuf>,
}

impl Policy {
    /// A policy from the configuration's absolute, normalised paths.
    pub fn new(exports: &[PathBuf], local: &[PathBuf]) -> Policy {
        let norm = |p: &PathBuf| p.components().collect::<PathBuf>();
        Policy {
            exports: exports.iter().map(norm).collect(),
            local: local.iter().map(norm).collect(),
        }
    }

    /// How `path` (absolute, without `.`/`..`) is treated. The most
    /// specific of the export and local entries containing it decides.
    pub fn classify(&self, path: &Path) -> Visibility {
        let depth = |p: &PathBuf| p.components().count();
        let export = self
            .exports
            .iter()
            .filter(|e| path.starts_with(e))
            .map(depth)
            .max();
        let local = self
            .local
            .iter()
            .filter(|l| path.starts_with(l))
            .map(depth)
            .max();
        match (export, local) {
            (Some(_), None) => Visibility::Visible,
            (Some(e), Some(l)) if e > l => Visibility::Visible,
            _ if self
                .exports
                .iter()
                .any(|e| e.starts_with(path) && e != path) =>
            {
                Visibility::Passage
            }
            _ => Visibility::Hidden,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn default_like_policy_hides_system_directories() {
        let pol = Policy::new(&[p("/")], &[p("/proc"), p("/etc"), p("/usr")]);
        assert_eq!(pol.classify(&p("/")), Visibility::Visible);
        assert_eq!(pol.classify(&p("/home/ann/x")), Visibility::Visible);
        assert_eq!(pol.classify(&p("/proc")), Visibility::Hidden);
        assert_eq!(pol.classify(&p("/etc/passwd")), Visibility::Hidden);
        // Component-wise: /etcetera is not under /etc.
        assert_eq!(pol.classify(&p("/etcetera")), Visibility::Visible);
    }

    #[test]
    fn passages_lead_only_to_exports() {
        let pol = Policy::new(&[p("/srv/data"), p("/home/ann")], &[p("/home/ann/.cache")]);
        assert_eq!(pol.classify(&p("/")), Visibility::Passage);
        assert_eq!(pol.classify(&p("/srv")), Visibility::Passage);
        assert_eq!(pol.classify(&p("/srv/data")), Visibility::Visible);
        assert_eq!(pol.classify(&p("/srv/data/f")), Visibility::Visible);
        assert_eq!(pol.classify(&p("/srv/other")), Visibility::Hidden);
        assert_eq!(pol.classify(&p("/home/bob")), Visibility::Hidden);
        assert_eq!(pol.classify(&p("/home/ann/.cache/x")), Visibility::Hidden);
        assert_eq!(pol.classify(&p("/tmp")), Visibility::Hidden);
    }

    #[test]
    fn an_export_below_a_local_path_wins() {
        let pol = Policy::new(&[p("/"), p("/etc/mosix-shared")], &[p("/etc")]);
        assert_eq!(pol.classify(&p("/etc/passwd")), Visibility::Hidden);
        assert_eq!(pol.classify(&p("/etc/mosix-shared/a")), Visibility::Visible);
    }
}
