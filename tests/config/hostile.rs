//! Hostile configurations (issue "Bounded"): what one AccessPolicy written to exhaust
//! portcullis costs `validate`. Memory is the child process's peak, as the kernel counts
//! it (`getrusage(RUSAGE_CHILDREN)`, asked through Python, which the test dependencies
//! install anyway); time is bounded by a hang detector only. Figures live in
//! BENCHMARKS.md, not here: the bounds below are generous, and the code before the
//! budgets failed each of them (356 MiB for 300 patterns, seconds for the nested schema).

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::portcullis::portcullis_bin;

/// What `validate` may peak at for any of these: the budgets hold it near its baseline.
const PEAK_BOUND_MIB: f64 = 160.0;

struct Run {
    code: Option<i32>,
    stderr: String,
    peak_mib: f64,
    took: Duration,
}

/// `portcullis validate --config FILE`, its peak resident memory read when it exits.
fn validate(file: &Path) -> Run {
    const MEASURE: &str = "import resource, subprocess, sys\n\
        p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)\n\
        sys.stderr.buffer.write(p.stderr)\n\
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n\
        sys.exit(p.returncode)\n";
    let started = Instant::now();
    let out = Command::new("python3")
        .args(["-c", MEASURE])
        .arg(portcullis_bin())
        .args(["validate", "--config"])
        .arg(file)
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .expect("python3 runs the child (scripts/install-test-deps.sh needs it too)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let kib: f64 = stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{stdout:?}"));
    Run {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        peak_mib: kib / 1024.0,
        took: started.elapsed(),
    }
}

fn policy(dir: &Path, name: &str, spec: serde_json::Value) -> std::path::PathBuf {
    let doc = serde_json::json!({
        "apiVersion": "portcullis.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": name}, "spec": spec,
    });
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    path
}

/// Each distinct and just under the per-pattern limit (a Unicode word class, 18 times).
fn heavy_pattern(i: usize, class: &str) -> String {
    format!("^/{i}/{class}{{18}}$")
}

fn assert_refused_cheaply(run: &Run, field: &str) {
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains(field) && run.stderr.contains("--max-regex-bytes"),
        "{}",
        run.stderr
    );
    assert!(
        run.peak_mib < PEAK_BOUND_MIB,
        "validate peaked at {:.0} MiB",
        run.peak_mib
    );
    assert!(run.took < Duration::from_secs(60), "{:?}", run.took);
}

#[test]
fn hundreds_of_heavy_regexes_are_refused_within_the_namespaces_budget() {
    let dir = tempfile::tempdir().unwrap();
    for n in [300, 1000] {
        let matcho: serde_json::Map<String, serde_json::Value> = (0..n)
            .map(|i| {
                (
                    format!("x-h{i}"),
                    format!("#{}", heavy_pattern(i, r"\w")).into(),
                )
            })
            .collect();
        let file = policy(
            dir.path(),
            &format!("regexes-{n}"),
            serde_json::json!({"engine": "matcho", "matcho": {"headers": matcho}}),
        );
        let run = validate(&file);
        assert_refused_cheaply(&run, "field `matcho.headers.x-h");
        std::fs::remove_file(file).unwrap();
    }
}

#[test]
fn json_schema_patterns_count_against_the_same_budget() {
    let dir = tempfile::tempdir().unwrap();
    let properties: serde_json::Map<String, serde_json::Value> = (0..300)
        .map(|i| {
            let pattern = heavy_pattern(i, r"\p{L}");
            (format!("x-h{i}"), serde_json::json!({"pattern": pattern}))
        })
        .collect();
    let file = policy(
        dir.path(),
        "schema-patterns",
        serde_json::json!({"engine": "json-schema", "schema": {
            "properties": {"headers": {"properties": properties}}}}),
    );
    let run = validate(&file);
    assert_refused_cheaply(&run, "field `schema.properties.headers.properties.x-h");
}

#[test]
fn a_schema_whose_refs_fan_out_exponentially_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut definitions = serde_json::Map::new();
    definitions.insert("l0".into(), serde_json::json!({"type": "string"}));
    for i in 1..=28 {
        let below = format!("#/definitions/l{}", i - 1);
        definitions.insert(
            format!("l{i}"),
            serde_json::json!({"anyOf": [{"$ref": below}, {"$ref": below}]}),
        );
    }
    let file = policy(
        dir.path(),
        "fan-out",
        serde_json::json!({"engine": "json-schema", "schema": {
            "definitions": definitions,
            "properties": {"uri": {"$ref": "#/definitions/l28"}}}}),
    );
    let run = validate(&file);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("field `schema`") && run.stderr.contains("over the limit"),
        "{}",
        run.stderr
    );
    assert!(run.peak_mib < PEAK_BOUND_MIB, "{:.0} MiB", run.peak_mib);
}
