//! The layout is the architecture: the product never carries the test bed, the scenario
//! tests or the benchmarks, and the container image is built without them.

use std::process::Command;

const PRODUCT: [&str; 7] = [
    "meshfed-model",
    "meshfed-certs",
    "meshfed-proto",
    "meshfed-gateway",
    "meshfed-federation",
    "meshfed-dns-proxy",
    "meshfed-agent",
];
const NOT_PRODUCT: [&str; 3] = ["meshfed-testbed", "meshfed-e2e", "meshfed-bench"];

/// `cargo tree -e normal` of `package`: the crates it links, without tests and benches.
fn normal_tree(package: &str, no_default_features: bool) -> String {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "tree",
        "-e",
        "normal",
        "--locked",
        "--offline",
        "--prefix",
        "none",
        "-p",
        package,
    ])
    .current_dir(env!("CARGO_MANIFEST_DIR"));
    if no_default_features {
        cmd.arg("--no-default-features");
    }
    let out = cmd.output().expect("cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn names(tree: &str) -> Vec<&str> {
    tree.lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

#[test]
fn no_production_crate_links_the_test_bed_e2e_or_the_benchmarks() {
    for package in PRODUCT {
        let tree = normal_tree(package, false);
        for other in NOT_PRODUCT {
            assert!(
                !names(&tree).contains(&other),
                "{package} links {other}:\n{tree}"
            );
        }
    }
    let binary = normal_tree("meshfed", true);
    for other in NOT_PRODUCT {
        assert!(
            !names(&binary).contains(&other),
            "meshfed --no-default-features links {other}"
        );
    }
    // The default build is the one users run the test bed from.
    assert!(names(&normal_tree("meshfed", false)).contains(&"meshfed-testbed"));
}

#[test]
fn the_container_image_is_built_without_the_test_bed() {
    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile"))
        .expect("Dockerfile");
    let build = dockerfile
        .lines()
        .find(|l| l.contains("cargo build"))
        .expect("a cargo build line");
    assert!(build.contains("--no-default-features"), "{build}");
    assert!(
        build.contains("--locked") && build.contains("--bin meshfed"),
        "{build}"
    );
}
