//! What `serve`'s flags ask for, checked before anything starts: a mistake is a clear
//! start-up error, never a silent default.

use anyhow::{bail, Context};

use crate::cli::ServeArgs;
use crate::source::files::FileSource;

/// Where configuration comes from.
pub enum Source {
    Files(FileSource),
    Cluster(crate::source::cluster::Settings),
}

/// The configuration source the flags name.
pub fn check(args: &ServeArgs) -> anyhow::Result<Source> {
    if args.cluster.kube {
        if !args.config.is_empty() {
            bail!("--kube and --config are two sources: pass one");
        }
        if args.users_dir.is_some() {
            bail!("--users-dir is for file mode: with --kube, created Users are User objects");
        }
        let mut settings = args.cluster.settings();
        settings.root_namespace = Some(args.tenancy.kube_root()?);
        settings.max_regex_bytes = Some(args.tenancy.max_regex_bytes);
        settings.users = args.users.mode();
        return Ok(Source::Cluster(settings));
    }
    if args.users.mode == crate::cli::UsersMode::OnDemand {
        bail!("--users on-demand reads Users from the cluster: it needs --kube");
    }
    if args.config.is_empty() {
        bail!("no configuration: pass --config PATH (a file or directory), or --kube");
    }
    if args.create_users && args.users_dir.is_none() {
        bail!("--create-users in file mode needs --users-dir DIR, where created Users are kept");
    }
    let users_dir = match &args.users_dir {
        None => None,
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating --users-dir {}", dir.display()))?;
            Some(
                dir.canonicalize()
                    .with_context(|| format!("reading --users-dir {}", dir.display()))?,
            )
        }
    };
    Ok(Source::Files(FileSource {
        config: args.config.clone(),
        users_dir,
        root_namespace: args.tenancy.root_namespace.as_deref().map(Into::into),
        max_regex_bytes: args.tenancy.max_regex_bytes,
    }))
}
