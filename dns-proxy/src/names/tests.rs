use super::*;

fn info(ips: &[&str], short: &str, ns: &str) -> NameInfo {
    NameInfo {
        ips: ips.iter().map(|s| s.to_string()).collect(),
        registry: "Kubernetes".into(),
        shortname: short.into(),
        namespace: ns.into(),
        ..Default::default()
    }
}

fn table() -> BTreeMap<String, NameInfo> {
    [
        (
            "helloworld.sample.svc.cluster.local".to_string(),
            info(&["240.240.1.2", "2001:2::102"], "helloworld", "sample"),
        ),
        (
            "reviews.other.svc.cluster.local".to_string(),
            info(&["10.96.0.7"], "reviews", "other"),
        ),
    ]
    .into()
}

fn q(name: &str) -> LowerName {
    LowerName::from(Name::from_ascii(name).expect("a valid name"))
}

fn names() -> Names {
    Names::build(&table(), &Scope::kubernetes("sample", "cluster.local", &[]))
}

fn direct(n: &Names, name: &str) -> Option<String> {
    match n.lookup(&q(name))? {
        Found::Direct(h) => Some(h.name.to_ascii()),
        Found::Alias(_) => None,
    }
}

fn alias(n: &Names, name: &str) -> Option<String> {
    match n.lookup(&q(name))? {
        Found::Alias(h) => Some(h.name.to_ascii()),
        Found::Direct(_) => None,
    }
}

#[test]
fn every_name_form_of_a_host_answers_directly() {
    let n = names();
    let fqdn = Some("helloworld.sample.svc.cluster.local.".to_string());
    for name in [
        "helloworld.sample.svc.cluster.local.",
        "HelloWorld.Sample.svc.cluster.local.",
        "helloworld.sample.svc.",
        "helloworld.sample.",
        "helloworld.",
        "helloworld.sample.svc.clusterset.local.",
    ] {
        assert_eq!(direct(&n, name), fqdn, "{name}");
    }
}

#[test]
fn bare_names_only_in_the_proxy_namespace() {
    let n = names();
    assert_eq!(direct(&n, "reviews."), None);
    assert_eq!(
        direct(&n, "reviews.other."),
        Some("reviews.other.svc.cluster.local.".into())
    );
}

#[test]
fn search_expansions_are_aliases_of_the_fqdn() {
    let n = names();
    let fqdn = Some("helloworld.sample.svc.cluster.local.".to_string());
    // What glibc asks first for `helloworld.sample` and for the fqdn itself with ndots:5.
    assert_eq!(
        alias(&n, "helloworld.sample.sample.svc.cluster.local."),
        fqdn
    );
    assert_eq!(
        alias(
            &n,
            "helloworld.sample.svc.cluster.local.sample.svc.cluster.local."
        ),
        fqdn
    );
    assert_eq!(
        alias(&n, "helloworld.sample.svc.cluster.local.cluster.local."),
        fqdn
    );
    assert_eq!(
        alias(&n, "reviews.other.svc.svc.cluster.local."),
        Some("reviews.other.svc.cluster.local.".into())
    );
    // `helloworld` + `sample.svc.cluster.local` is the fqdn: direct, not an alias of itself.
    assert_eq!(direct(&n, "helloworld.sample.svc.cluster.local."), fqdn);
}

#[test]
fn other_names_are_not_ours() {
    let n = names();
    for name in [
        "example.com.",
        "sample.svc.cluster.local.",
        "other.helloworld.sample.svc.cluster.local.",
        "helloworld.other.",
    ] {
        assert!(n.lookup(&q(name)).is_none(), "{name}");
    }
}

#[test]
fn addresses_split_by_family_and_bad_entries_skipped() {
    let mut t = table();
    t.insert(
        "broken.sample.svc.cluster.local".into(),
        info(&["not-an-ip"], "broken", "sample"),
    );
    let n = Names::build(&t, &Scope::kubernetes("sample", "cluster.local", &[]));
    assert_eq!(n.hosts(), 2);
    let Some(Found::Direct(h)) = n.lookup(&q("helloworld.")) else {
        panic!("helloworld is a mesh name");
    };
    assert_eq!(h.v4, vec![Ipv4Addr::new(240, 240, 1, 2)]);
    assert_eq!(h.v6, vec!["2001:2::102".parse::<Ipv6Addr>().unwrap()]);
    assert!(n.lookup(&q("broken.")).is_none());
}

#[test]
fn extra_search_domains_from_resolv_conf() {
    let scope = Scope::kubernetes("sample", "cluster.local", &["corp.example.".into()]);
    assert_eq!(
        scope.search.last().map(String::as_str),
        Some("corp.example")
    );
    let n = Names::build(&table(), &scope);
    assert!(alias(&n, "helloworld.corp.example.").is_some());
}

#[test]
fn the_first_host_in_name_order_keeps_a_contested_name() {
    let mut t = table();
    // A host whose fqdn is another host's expansion.
    t.insert(
        "helloworld.sample.cluster.local".into(),
        info(&["10.0.0.9"], "", ""),
    );
    let n = Names::build(&t, &Scope::kubernetes("sample", "cluster.local", &[]));
    assert_eq!(
        direct(&n, "helloworld.sample.cluster.local."),
        Some("helloworld.sample.cluster.local.".into()),
        "a direct name beats an expansion"
    );
}

/// Istio's agent gives a StatefulSet pod's name (`BuildNameTable`'s
/// `<hostname>.<subdomain>.<ns>.svc.<domain>`, shortname `<hostname>.<subdomain>`) the same
/// forms as a Service's: `mysql-0.mysql.db`, `mysql-0.mysql.db.svc`, bare `mysql-0.mysql` in
/// its namespace (as Kubernetes DNS's search path finds it). Not the Multi-Cluster Services
/// one: MCS names a pod `<hostname>.<cluster>.<service>.<ns>.svc.clusterset.local`.
#[test]
fn a_statefulset_pod_answers_to_its_short_forms() {
    let pod = "mysql-0.mysql.db.svc.cluster.local";
    let table = [(pod.to_string(), info(&["10.10.0.7"], "mysql-0.mysql", "db"))].into();
    let n = Names::build(&table, &Scope::kubernetes("db", "cluster.local", &[]));
    let fqdn = Some(format!("{pod}."));
    for name in [
        "mysql-0.mysql.db.",
        "mysql-0.mysql.db.svc.",
        "mysql-0.mysql.",
    ] {
        assert_eq!(direct(&n, name), fqdn, "{name}");
    }
    assert_eq!(direct(&n, "mysql-0.mysql.db.svc.cluster.local."), fqdn);
    assert!(
        n.lookup(&q("mysql-0.mysql.db.svc.clusterset.local."))
            .is_none()
    );
    assert_eq!(
        alias(
            &n,
            "mysql-0.mysql.db.svc.cluster.local.db.svc.cluster.local."
        ),
        fqdn,
        "a search expansion is a CNAME to the pod's name"
    );
}
