//! Envoy's virtual host and route selection, and header edits.

use super::*;

fn vhost(name: &str, domains: &[&str]) -> VirtualHost {
    VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        ..Default::default()
    }
}

fn route(path: PathMatch, headers: Vec<HeaderMatch>) -> Route {
    Route {
        name: String::new(),
        path,
        case_sensitive: true,
        headers,
        action: Action::Direct {
            status: 200,
            body: String::new(),
        },
        fault: None,
        headers_ops: HeaderOps::default(),
    }
}

fn hm(name: &str, rule: HeaderRule, invert: bool) -> HeaderMatch {
    HeaderMatch {
        name: name.into(),
        rule,
        invert,
        missing_as_empty: false,
    }
}

fn s(kind: StringKind) -> HeaderRule {
    HeaderRule::Str(StringMatch {
        kind,
        ignore_case: false,
    })
}

fn view<'a>(path: &'a str, headers: &'a [(String, String)]) -> RequestView<'a> {
    RequestView {
        method: "GET",
        path,
        authority: "h:5000",
        headers,
    }
}

/// Envoy's virtual host search: an exact domain first, then the longest `*.suffix`, then the
/// longest `prefix.*`, then `*`; case-insensitive; a wildcard stands for at least one
/// character; nothing found means no vhost (Envoy's 404).
#[test]
fn vhosts_are_found_in_envoys_order() {
    let t = RouteTable {
        vhosts: vec![
            vhost("any", &["*"]),
            vhost("prefix", &["helloworld.*"]),
            vhost("short-suffix", &["*.local:5000"]),
            vhost("suffix", &["*.svc.cluster.local:5000"]),
            vhost(
                "exact",
                &[
                    "helloworld.sample.svc.cluster.local:5000",
                    "helloworld:5000",
                ],
            ),
        ],
        ..Default::default()
    };
    let found = |h: &str| t.vhost(h).map(|v| v.name.as_str());
    assert_eq!(found("helloworld:5000"), Some("exact"));
    assert_eq!(found("HelloWorld:5000"), Some("exact"));
    assert_eq!(found("other.sample.svc.cluster.local:5000"), Some("suffix"));
    assert_eq!(found("x.local:5000"), Some("short-suffix"));
    assert_eq!(found("helloworld.other:5000"), Some("prefix"));
    assert_eq!(found("nothing:80"), Some("any"));
    let no_star = RouteTable {
        vhosts: vec![vhost("suffix", &["*.b"]), vhost("exact", &["a:1"])],
        ..Default::default()
    };
    assert!(no_star.vhost("a:2").is_none());
    assert!(
        no_star.vhost(".b").is_none(),
        "a wildcard needs a character"
    );
}

/// `ignore_port_in_host_matching` (Istio's per-port route configuration `"5000"`, whose
/// domains carry no port): the Host's port is not matched.
#[test]
fn ignore_port_in_host_matching_drops_the_port() {
    let mut t = RouteTable {
        vhosts: vec![vhost("hw", &["helloworld"])],
        ..Default::default()
    };
    assert!(t.vhost("helloworld:5000").is_none());
    t.ignore_port = true;
    assert_eq!(
        t.vhost("helloworld:5000").map(|v| v.name.as_str()),
        Some("hw")
    );
    assert_eq!(t.vhost("helloworld").map(|v| v.name.as_str()), Some("hw"));
}

/// Routes are tried in order and the first match wins; `prefix` and `path` ignore the query
/// string; `case_sensitive: false` folds case; `safe_regex` must match the whole path.
#[test]
fn path_matches_as_envoy() {
    let none: Vec<(String, String)> = Vec::new();
    let prefix = route(PathMatch::Prefix("/hello".into()), vec![]);
    assert!(prefix.matches(&view("/hello/world?x=1", &none)));
    assert!(!prefix.matches(&view("/HELLO", &none)));
    let mut folded = prefix.clone();
    folded.case_sensitive = false;
    assert!(folded.matches(&view("/HELLO/x", &none)));
    let exact = route(PathMatch::Exact("/hello".into()), vec![]);
    assert!(exact.matches(&view("/hello?x=1", &none)));
    assert!(!exact.matches(&view("/hello/", &none)));
    let re = route(PathMatch::Regex(Regex::full("/hel+o").expect("re")), vec![]);
    assert!(re.matches(&view("/helllo", &none)));
    assert!(!re.matches(&view("/hello/x", &none)), "a full match");
    let v = VirtualHost {
        routes: vec![
            route(PathMatch::Exact("/a".into()), vec![]),
            Route {
                name: "second".into(),
                ..route(PathMatch::Prefix("/".into()), vec![])
            },
        ],
        ..Default::default()
    };
    assert_eq!(
        v.route(&view("/b", &none)).map(|r| r.name.as_str()),
        Some("second")
    );
}

/// Header matchers (Istio `match.headers` and `withoutHeaders`): exact, prefix, full-match
/// regex, present, and inverted; a missing header fails a string match (and so passes an
/// inverted one); repeated headers are matched joined by `,`; `:authority` is the Host.
#[test]
fn header_matches_as_envoy() {
    let h = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let jason = h(&[("End-User", "jason")]);
    let none = h(&[]);
    let exact = hm("end-user", s(StringKind::Exact("jason".into())), false);
    assert!(exact.matches(&view("/", &jason)));
    assert!(!exact.matches(&view("/", &none)));
    let prefix = hm("end-user", s(StringKind::Prefix("jas".into())), false);
    assert!(prefix.matches(&view("/", &jason)));
    let re = hm(
        "end-user",
        s(StringKind::Regex(Regex::full("jas.*").expect("re"))),
        false,
    );
    assert!(re.matches(&view("/", &jason)));
    let part = hm(
        "end-user",
        s(StringKind::Regex(Regex::full("as").expect("re"))),
        false,
    );
    assert!(!part.matches(&view("/", &jason)), "regex is a full match");
    let present = hm("end-user", HeaderRule::Present(true), false);
    assert!(present.matches(&view("/", &jason)) && !present.matches(&view("/", &none)));
    let without = hm("end-user", s(StringKind::Exact("jason".into())), true);
    assert!(!without.matches(&view("/", &jason)));
    assert!(without.matches(&view("/", &none)));
    let twice = h(&[("x", "a"), ("x", "b")]);
    assert!(hm("x", s(StringKind::Exact("a,b".into())), false).matches(&view("/", &twice)));
    let authority = hm(":authority", s(StringKind::Exact("h:5000".into())), false);
    assert!(authority.matches(&view("/", &none)));
}

/// Envoy's header edits: removals first, then additions by append action
/// (append, add-if-absent, overwrite-or-add, overwrite-if-exists).
#[test]
fn header_edits_apply_as_envoy() {
    let add = |name: &str, value: &str, append| HeaderAdd {
        name: name.into(),
        value: value.into(),
        append,
    };
    let edit = HeaderEdit {
        add: vec![
            add("x-append", "2", Append::AppendOrAdd),
            add("x-absent", "new", Append::AddIfAbsent),
            add("x-set", "new", Append::OverwriteOrAdd),
            add("x-only-if", "new", Append::OverwriteIfExists),
            add("x-gone", "back", Append::AppendOrAdd),
        ],
        remove: vec!["X-Gone".into()],
    };
    let mut headers: Vec<(String, String)> = [
        ("x-append", "1"),
        ("x-absent", "old"),
        ("X-Set", "old"),
        ("x-gone", "old"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    edit.apply(&mut headers);
    let got: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("x-append", "1"),
            ("x-absent", "old"),
            ("x-append", "2"),
            ("x-set", "new"),
            ("x-gone", "back"),
        ]
    );
}

/// A FractionalPercent roll: 0 never, 100 % always.
#[test]
fn rolls_at_the_extremes() {
    assert!((0..1000).all(|_| !roll(0)));
    assert!((0..1000).all(|_| roll(1_000_000)));
}
