//! Where the four component binaries are: `$GOROUTER_BIN`, `$ROUTING_API_BIN`,
//! `$TCP_ROUTER_BIN`, `$ROUTE_EMITTER_BIN`, else next to routing-tier's own executable.

use std::path::{Path, PathBuf};

use crate::Error;

/// The component binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub routing_api: PathBuf,
    pub gorouter: PathBuf,
    pub tcp_router: PathBuf,
    pub route_emitter: PathBuf,
}

impl Binaries {
    /// Finds all four (next to `std::env::current_exe()` unless the environment says where).
    pub fn find() -> Result<Self, Error> {
        let exe = std::env::current_exe().map_err(Error::CurrentExe)?;
        let dir = exe.parent().unwrap_or(Path::new(".")).to_path_buf();
        Self::find_in(&dir, |var| std::env::var_os(var).map(PathBuf::from))
    }

    /// Finds all four in `dir`, `env` giving the overriding variables.
    pub fn find_in(dir: &Path, env: impl Fn(&str) -> Option<PathBuf>) -> Result<Self, Error> {
        let one = |name: &str| -> Result<PathBuf, Error> {
            let var = format!("{}_BIN", name.to_ascii_uppercase().replace('-', "_"));
            let path = env(&var).unwrap_or_else(|| dir.join(name));
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::BinaryNotFound {
                    name: name.to_string(),
                    dir: match env(&var) {
                        Some(p) => format!("${var} is {}", p.display()),
                        None => dir.display().to_string(),
                    },
                })
            }
        };
        Ok(Self {
            routing_api: one("routing-api")?,
            gorouter: one("gorouter")?,
            tcp_router: one("tcp-router")?,
            route_emitter: one("route-emitter")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_is_named_with_the_build_command() {
        let dir = std::env::temp_dir().join(format!("routing-tier-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let e = Binaries::find_in(&dir, |_| None).expect_err("nothing there");
        let msg = e.to_string();
        assert!(
            msg.starts_with("routing-api not found next to routing-tier ("),
            "{msg}"
        );
        assert!(
            msg.contains("cargo build --release -p routing-tier"),
            "{msg}"
        );
        for name in ["routing-api", "gorouter", "tcp-router"] {
            std::fs::write(dir.join(name), "").expect("write");
        }
        let e = Binaries::find_in(&dir, |_| None).expect_err("no emitter");
        assert!(e.to_string().starts_with("route-emitter not found"), "{e}");
        let env_path = dir.join("gorouter");
        let found = Binaries::find_in(&dir, |v| {
            (v == "ROUTE_EMITTER_BIN").then(|| env_path.clone())
        })
        .expect("all found");
        assert_eq!(found.route_emitter, env_path);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
