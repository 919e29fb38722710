//! `validate`, `explain`, `test` and `crds`: one-shot commands over the same core as
//! `serve`.

mod policy_tests;

pub use policy_tests::test;

use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::{ConfigArgs, ExplainArgs, ExplainOutput, TrustArgs};
use crate::decision::{Authorizer, DecisionLog, HttpRequest};
use crate::metrics::Metrics;
use crate::resources::ConfigError;
use crate::snapshot::{Compiler, Snapshot, SnapshotStore};
use crate::source::files;
use crate::token::{TokenSettings, TokenVerifier};
use crate::users::UserResolver;

/// The configuration and how many resources it holds, or every error, those of parsing
/// and of compiling alike, so that one run lists all it can find; and the warnings, which
/// a refused configuration has too.
type Load = (
    Result<(Snapshot, usize), Vec<ConfigError>>,
    Vec<ConfigError>,
);

fn load(args: &ConfigArgs, check_labels: bool) -> Load {
    let root = args.tenancy.root_namespace.as_deref().map(Into::into);
    let mut compiler = Compiler::offline()
        .scoped(root)
        .max_regex_bytes(args.tenancy.max_regex_bytes);
    let mut unlabelled = Vec::new();
    let count = files::load_each(&args.config, |item| {
        if let (true, Ok(resource)) = (check_labels, &item) {
            unlabelled.extend(identifier_label_warning(resource));
        }
        compiler.push(item)
    });
    unlabelled.into_iter().for_each(|w| compiler.warn(w));
    if count == 0 {
        compiler.warn(files::empty_configuration(&args.config));
    }
    let (compiled, warnings) = compiler.finish_with_warnings();
    (compiled.map(|s| (s, count)), warnings)
}

/// Each error or warning about a field of a file's document, pointed at that field's line
/// rather than the document's first (as far as the YAML's block structure lets it be
/// found). Only `validate` pays for reading the files again.
fn at_field_lines(found: Vec<ConfigError>) -> Vec<ConfigError> {
    let mut texts: std::collections::HashMap<std::path::PathBuf, Option<String>> =
        std::collections::HashMap::new();
    found
        .into_iter()
        .map(|mut e| {
            let (crate::resources::Origin::File { path, line, .. }, Some(field)) =
                (&mut e.origin, &e.field)
            else {
                return e;
            };
            let text = texts
                .entry(path.to_path_buf())
                .or_insert_with(|| crate::resources::read_text(path).ok());
            if let Some(at) = text
                .as_deref()
                .and_then(|t| crate::resources::field_line(t, (*line).max(1), field))
            {
                *line = at;
            }
            e
        })
        .collect()
}

/// A Kubernetes-form User with identifiers whose `portcullis.dev/identifier` label is
/// missing or names none of them: `serve --kube --users on-demand` finds it by name only.
fn identifier_label_warning(r: &crate::resources::Resource) -> Option<ConfigError> {
    let (crate::resources::Spec::User(spec), Some(labels)) = (&r.spec, &r.labels) else {
        return None;
    };
    let identifiers = spec
        .identifier
        .iter()
        .map(|i| (i.system.as_str(), i.value.as_str()));
    let label = labels
        .get(crate::users::IDENTIFIER_LABEL)
        .map(String::as_str);
    let message = crate::users::LabelCheck::of(identifiers, label).warning()?;
    Some(ConfigError {
        origin: r.origin.clone(),
        resource: Some(r.id()),
        field: Some("metadata.labels".into()),
        message,
    })
}

/// Exit codes: 0, the configuration is good (warnings may be printed); 1, it has errors;
/// 2, the command line is wrong.
pub fn validate(args: &ConfigArgs) -> ExitCode {
    let (compiled, warnings) = load(args, true);
    let warnings = at_field_lines(warnings);
    let compiled = compiled.map_err(at_field_lines);
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    match compiled {
        Ok((snapshot, count)) => {
            println!("ok: {count} resources ({})", snapshot.summary());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{} error(s), {} warning(s)", errors.len(), warnings.len());
            ExitCode::FAILURE
        }
    }
}

/// The configuration, or `None` once its errors are printed.
/// The live configuration of the cluster, read once, as every replica compiles it.
async fn load_from_cluster(args: &ExplainArgs) -> anyhow::Result<Snapshot> {
    let mut settings = args.cluster.settings();
    settings.root_namespace = Some(args.tenancy.kube_root()?);
    settings.max_regex_bytes = Some(args.tenancy.max_regex_bytes);
    let client = kube::Client::try_default().await?;
    let snapshot = crate::source::cluster::load_once(client, settings).await?;
    Ok(Arc::unwrap_or_clone(snapshot))
}

fn load_or_report(args: &ConfigArgs) -> Option<Snapshot> {
    let (compiled, warnings) = load(args, false);
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    match compiled {
        Ok((snapshot, _)) => Some(snapshot),
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            None
        }
    }
}

/// An authorizer over one fixed snapshot, that never creates a User; its calls to
/// identity providers trust what `trust` adds. Fails on a `--ca-file` that cannot be used.
fn offline_authorizer(
    snapshot: Snapshot,
    users: UserResolver,
    trust: &TrustArgs,
) -> anyhow::Result<Authorizer> {
    let settings = TokenSettings::default();
    let metrics = Arc::new(Metrics::new());
    let http = trust.idp_client(settings.fetch_timeout)?;
    let snapshots = Arc::new(SnapshotStore::default());
    snapshots.store(snapshot);
    Ok(Authorizer {
        snapshots,
        tokens: TokenVerifier::with_client(settings, http, metrics.clone()),
        metrics,
        log: DecisionLog::new(0),
        deadline: crate::decision::DEFAULT_DEADLINE,
        shadow: false,
        users,
    })
}

/// A request given on the command line or in a test file. A `bearer` token replaces any
/// `authorization` among `headers` (lower-case names).
fn offline_request(
    method: &str,
    scheme: &str,
    path: &str,
    mut headers: Vec<(String, String)>,
    bearer: Option<&str>,
) -> HttpRequest {
    if let Some(token) = bearer {
        headers.retain(|(k, _)| k != "authorization");
        headers.push(("authorization".into(), format!("Bearer {token}")));
    }
    let host = headers
        .iter()
        .find(|(k, _)| k == "host")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    HttpRequest {
        method: method.to_ascii_uppercase(),
        scheme: scheme.into(),
        host,
        path: path.into(),
        headers,
        remote_addr: None,
        context_extensions: Vec::new(),
        namespace: None,
    }
}

pub async fn explain(args: ExplainArgs) -> ExitCode {
    let snapshot = if args.cluster.kube {
        match load_from_cluster(&args).await {
            Ok(snapshot) => snapshot,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let config = ConfigArgs {
            config: args.config.clone(),
            tenancy: args.tenancy.clone(),
        };
        let Some(snapshot) = load_or_report(&config) else {
            return ExitCode::FAILURE;
        };
        snapshot
    };
    let users = if args.create_users {
        UserResolver::dry_run()
    } else {
        UserResolver::off()
    };
    let authorizer = match offline_authorizer(
        snapshot,
        users.with_name_claims(crate::cli::name_claims(args.claim_users_by_name)),
        &args.trust,
    ) {
        Ok(authorizer) => authorizer,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut request = offline_request(
        &args.method,
        "http",
        &args.path,
        args.headers.clone(),
        args.token.as_deref(),
    );
    request.namespace = args.request_namespace.clone();
    let (decision, trace) = authorizer.explain(&request).await;
    match args.output {
        // The tree ends with the decision: said once.
        ExplainOutput::Tree => print!("{}", trace.to_tree()),
        // The JSON is for programs; people reading the terminal get the verdict on stderr.
        ExplainOutput::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&trace).expect("trace serialises")
            );
            eprintln!("{}", verdict(&decision));
        }
    }
    if decision.allowed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// `ALLOW 200 (allowed) by AccessPolicy/p`, as the JSON output's summary on stderr.
fn verdict(decision: &crate::decision::Decision) -> String {
    format!(
        "{} {} ({}){}",
        if decision.allowed() { "ALLOW" } else { "DENY" },
        decision.http_status(),
        decision.reason,
        decision
            .policy
            .as_deref()
            .map(|p| format!(" by AccessPolicy/{p}"))
            .unwrap_or_default()
    )
}

pub fn crds() -> ExitCode {
    for crd in crate::resources::crds() {
        println!("---");
        print!("{}", serde_yaml::to_string(&crd).expect("CRDs serialise"));
    }
    ExitCode::SUCCESS
}
