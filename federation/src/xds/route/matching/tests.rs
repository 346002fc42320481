use super::*;

fn m() -> HttpMatch {
    HttpMatch::default()
}

fn spec(h: &HeaderMatcher) -> header_matcher::HeaderMatchSpecifier {
    h.header_match_specifier.clone().unwrap()
}

/// Istio `TranslateRouteMatch`: uri exact → `path`, prefix → `prefix`, regex →
/// `safe_regex` (RE2, no deprecated engine field); `ignoreUriCase` clears `case_sensitive`,
/// which is always written; no uri is prefix `/` (gRFC A28 reads all three).
#[test]
fn uri_matches() {
    let mut x = m();
    x.uri = Some(StringMatch::Exact("/helloworld.Greeter/SayHello".into()));
    let r = route_match(Some(&x));
    assert_eq!(
        r.path_specifier,
        Some(route_match::PathSpecifier::Path(
            "/helloworld.Greeter/SayHello".into()
        ))
    );
    assert_eq!(r.case_sensitive, Some(BoolValue { value: true }));
    x.uri = Some(StringMatch::Prefix("/helloworld.Greeter/".into()));
    x.ignore_uri_case = true;
    let r = route_match(Some(&x));
    assert_eq!(
        r.path_specifier,
        Some(route_match::PathSpecifier::Prefix(
            "/helloworld.Greeter/".into()
        ))
    );
    assert_eq!(r.case_sensitive, Some(BoolValue { value: false }));
    x.uri = Some(StringMatch::Regex("/helloworld\\..*".into()));
    let Some(route_match::PathSpecifier::SafeRegex(re)) = route_match(Some(&x)).path_specifier
    else {
        panic!("no regex")
    };
    assert_eq!(re.regex, "/helloworld\\..*");
    assert_eq!(re.engine_type, None);
    assert_eq!(
        route_match(Some(&m())).path_specifier,
        Some(route_match::PathSpecifier::Prefix("/".into()))
    );
    assert_eq!(route_match(None), catch_all());
}

/// Istio `translateHeaderMatch`: `string_match` exact/prefix/safe_regex (not the deprecated
/// `exact_match`), `regex: "*"` as `present_match`, `withoutHeaders` inverted, sorted by name.
#[test]
fn header_matches() {
    use header_matcher::HeaderMatchSpecifier as S;
    let mut x = m();
    x.headers
        .insert("end-user".into(), StringMatch::Exact("jason".into()));
    x.headers
        .insert("x-canary".into(), StringMatch::Regex("*".into()));
    x.headers
        .insert("b-prefix".into(), StringMatch::Prefix("jas".into()));
    x.without_headers
        .insert("c-regex".into(), StringMatch::Regex("jas.*".into()));
    let r = route_match(Some(&x));
    let names: Vec<&str> = r.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["b-prefix", "c-regex", "end-user", "x-canary"]);
    assert_eq!(
        spec(&r.headers[0]),
        S::StringMatch(string(string_matcher::MatchPattern::Prefix("jas".into())))
    );
    assert!(r.headers[1].invert_match && r.headers[1].treat_missing_header_as_empty);
    assert_eq!(
        spec(&r.headers[1]),
        S::StringMatch(string(string_matcher::MatchPattern::SafeRegex(regex(
            "jas.*"
        ))))
    );
    assert!(!r.headers[2].invert_match);
    assert_eq!(
        spec(&r.headers[2]),
        S::StringMatch(string(string_matcher::MatchPattern::Exact("jason".into())))
    );
    assert_eq!(spec(&r.headers[3]), S::PresentMatch(true));
}

/// Istio `TranslateRoute`: a match for another port, for labels the client lacks, for
/// another source namespace or for gateways only does not apply (design §1.6).
#[test]
fn matches_that_exclude_the_client() {
    let labels: BTreeMap<String, String> = [("app".to_string(), "sleep".to_string())].into();
    let c = Client {
        namespace: "sample",
        labels: &labels,
        port: 5000,
    };
    assert!(applies(&m(), &c));
    let mut x = m();
    x.port = Some(5001);
    assert!(!applies(&x, &c));
    x.port = Some(5000);
    assert!(applies(&x, &c));
    x.source_labels.insert("app".into(), "sleep".into());
    assert!(applies(&x, &c));
    x.source_labels.insert("version".into(), "v1".into());
    assert!(!applies(&x, &c), "labels the client lacks");
    let mut x = m();
    x.source_namespace = Some("other".into());
    assert!(!applies(&x, &c));
    let mut x = m();
    x.gateways = vec!["ingress".into()];
    assert!(!applies(&x, &c));
    x.gateways.push("mesh".into());
    assert!(applies(&x, &c));
}

/// Istio `IsCatchAllRoute`: no match or only prefix `/` catches everything; a header or
/// an exact uri does not.
#[test]
fn catch_all_routes() {
    assert!(is_catch_all(None));
    let mut x = m();
    assert!(is_catch_all(Some(&x)));
    x.uri = Some(StringMatch::Prefix("/".into()));
    assert!(is_catch_all(Some(&x)));
    x.headers.insert("a".into(), StringMatch::Exact("b".into()));
    assert!(!is_catch_all(Some(&x)));
    let mut x = m();
    x.uri = Some(StringMatch::Exact("/".into()));
    assert!(!is_catch_all(Some(&x)));
}

/// gRPC C-core ignores an exact path that is not `/service/method` and a prefix with more
/// than two slashes (design pitfall 9): those are flagged.
#[test]
fn paths_grpc_would_ignore() {
    let path = |p: &str| RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Path(p.into())),
        ..Default::default()
    };
    let prefix = |p: &str| RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix(p.into())),
        ..Default::default()
    };
    assert!(!grpc_ignores(&path("/helloworld.Greeter/SayHello")));
    assert!(grpc_ignores(&path("/hello")));
    assert!(grpc_ignores(&path("/a/b/c")));
    assert!(!grpc_ignores(&prefix("/helloworld.Greeter/")));
    assert!(!grpc_ignores(&prefix("/")));
    assert!(grpc_ignores(&prefix("/a/b/c")));
}
