//! Topic ACLs: who may publish to a topic and subscribe to a filter.
//!
//! A tenant's patterns are MQTT filters with placeholders — `%u` the user
//! name, `%c` the client id, `%t` the tenant — expanded once per connection
//! into a [`ClientAcl`]. A placeholder whose value is empty or holds `/`,
//! `+` or `#` makes its pattern grant nothing (a user named `#` must not
//! widen `%t/%u/#` to the whole tenant).
//!
//! - Publish: the topic must match one expanded publish pattern.
//! - Subscribe: every topic the filter can match must be matched by the
//!   expanded subscribe patterns, together ([`covers`] decides this exactly;
//!   `acme/+` is refused if the patterns are `acme/a` and `acme/b`, and
//!   `acme/#` is allowed by `acme`, `acme/+` and `acme/+/#`).
//!
//! Topics starting with `$` are never matched by a wildcard at the first
//! level (MQTT 4.7.2) and never published by clients here.

use std::fmt;

/// A validated ACL pattern as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

/// Why a pattern is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ACL pattern `{pattern}`: {why}")]
pub struct PatternError {
    /// The pattern as given.
    pub pattern: String,
    /// What is wrong.
    pub why: &'static str,
}

impl Pattern {
    /// Checks a pattern: a valid MQTT filter once placeholders are filled,
    /// and only the placeholders `%u`, `%c`, `%t`.
    ///
    /// # Errors
    /// `PatternError` naming the pattern.
    pub fn new(pattern: &str) -> Result<Pattern, PatternError> {
        let error = |why| PatternError {
            pattern: pattern.to_owned(),
            why,
        };
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            if c == '%' && !matches!(chars.next(), Some('u' | 'c' | 't')) {
                return Err(error("`%` must start a placeholder %u, %c or %t"));
            }
        }
        let filled = pattern
            .replace("%u", "x")
            .replace("%c", "x")
            .replace("%t", "x");
        if !valid_filter(&filled) {
            return Err(error(
                "not a valid MQTT filter (`#` only as the last level, `+` a whole level)",
            ));
        }
        Ok(Pattern(pattern.to_owned()))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The pattern for one client, or `None` when a placeholder it uses has
    /// no safe value.
    pub fn expand(&self, who: &Identity<'_>) -> Option<String> {
        let mut out = self.0.clone();
        for (placeholder, value) in [
            ("%u", who.username),
            ("%c", who.client_id),
            ("%t", who.tenant),
        ] {
            if out.contains(placeholder) {
                let value = value.filter(|v| safe_value(v))?;
                out = out.replace(placeholder, value);
            }
        }
        Some(out)
    }

    /// Whether `topic` matches this pattern expanded for `who`, without
    /// building the expanded string (the lean ingress checks every publish
    /// this way instead of keeping an expanded ACL per connection). Same
    /// answer as [`topic_matches`] on [`Pattern::expand`]: a placeholder
    /// without a safe value matches nothing.
    pub fn matches_topic(&self, topic: &str, who: &Identity<'_>) -> bool {
        let dollar = topic.starts_with('$');
        let mut levels = topic.split('/');
        for (depth, f) in self.0.split('/').enumerate() {
            if f == "#" {
                return !(depth == 0 && dollar);
            }
            match levels.next() {
                None => return false,
                Some(_) if f == "+" => {
                    if depth == 0 && dollar {
                        return false;
                    }
                }
                Some(level) => {
                    if !level_equals(f, level, who) {
                        return false;
                    }
                }
            }
        }
        levels.next().is_none()
    }
}

/// Whether one literal pattern level, placeholders filled for `who`, is
/// `level`.
fn level_equals(pattern: &str, level: &str, who: &Identity<'_>) -> bool {
    let mut parts = pattern.split('%');
    let Some(rest) = level.strip_prefix(parts.next().unwrap_or("")) else {
        return false;
    };
    let mut rest = rest;
    for part in parts {
        let mut chars = part.chars();
        let value = match chars.next() {
            Some('u') => who.username,
            Some('c') => who.client_id,
            Some('t') => who.tenant,
            _ => None,
        };
        let Some(value) = value.filter(|v| safe_value(v)) else {
            return false;
        };
        match rest
            .strip_prefix(value)
            .and_then(|r| r.strip_prefix(chars.as_str()))
        {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A placeholder value that cannot change a pattern's structure.
fn safe_value(value: &str) -> bool {
    !value.is_empty() && !value.contains(['/', '+', '#', '\0'])
}

/// The values placeholders take for one client.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    /// `%u`.
    pub username: Option<&'a str>,
    /// `%c`.
    pub client_id: Option<&'a str>,
    /// `%t`.
    pub tenant: Option<&'a str>,
}

/// The publish and subscribe patterns of a role in a tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclPatterns {
    /// Topics one may publish to.
    pub publish: Vec<Pattern>,
    /// Filters one may subscribe to.
    pub subscribe: Vec<Pattern>,
}

impl AclPatterns {
    /// The defaults for devices: their own subtree and their own Sparkplug
    /// node (publish); their own subtree, their commands and host STATE
    /// (subscribe).
    pub fn device_defaults() -> AclPatterns {
        AclPatterns {
            publish: patterns(&["%t/%u/#", "spBv1.0/%t/+/%u", "spBv1.0/%t/+/%u/#"]),
            subscribe: patterns(&[
                "%t/%u/#",
                "spBv1.0/%t/NCMD/%u",
                "spBv1.0/%t/DCMD/%u/#",
                "spBv1.0/STATE/#",
            ]),
        }
    }

    /// The defaults for services (a gateway's own client): the whole tenant;
    /// its own Sparkplug host STATE topic, named after its client id or the
    /// gateway's default host id `fieldlink-<tenant>`; and every host's
    /// STATE to read (devices may read them too).
    pub fn service_defaults() -> AclPatterns {
        AclPatterns {
            publish: patterns(&[
                "%t/#",
                "spBv1.0/%t/#",
                "spBv1.0/STATE/%c",
                "spBv1.0/STATE/fieldlink-%t",
            ]),
            subscribe: patterns(&["%t/#", "spBv1.0/%t/#", "spBv1.0/STATE/#"]),
        }
    }

    /// Whether `who` may publish to `topic` under these patterns (a valid
    /// topic name, not starting with `$`); allocation-free.
    pub fn allows_publish(&self, topic: &str, who: &Identity<'_>) -> bool {
        valid_topic(topic)
            && !topic.starts_with('$')
            && self.publish.iter().any(|p| p.matches_topic(topic, who))
    }

    /// The patterns for one client.
    pub fn expand(&self, who: &Identity<'_>) -> ClientAcl {
        let expand = |list: &[Pattern]| list.iter().filter_map(|p| p.expand(who)).collect();
        ClientAcl {
            publish: expand(&self.publish),
            subscribe: expand(&self.subscribe),
        }
    }
}

fn patterns(list: &[&str]) -> Vec<Pattern> {
    list.iter().map(|p| Pattern(String::from(*p))).collect()
}

/// One client's expanded ACL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientAcl {
    publish: Vec<String>,
    subscribe: Vec<String>,
}

impl ClientAcl {
    /// An ACL granting everything (in-process links without a tenant).
    pub fn allow_all() -> ClientAcl {
        ClientAcl {
            publish: vec!["#".to_owned()],
            subscribe: vec!["#".to_owned()],
        }
    }

    /// Whether the client may publish to `topic` (a valid topic name:
    /// no wildcards; topics starting with `$` are refused).
    pub fn may_publish(&self, topic: &str) -> bool {
        valid_topic(topic)
            && !topic.starts_with('$')
            && self.publish.iter().any(|p| topic_matches(topic, p))
    }

    /// Whether every topic `filter` can match is allowed to the client.
    pub fn may_subscribe(&self, filter: &str) -> bool {
        valid_filter(filter) && covers(&self.subscribe, filter)
    }
}

/// Whether `topic` is a valid topic name: not empty, no wildcard, no NUL.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// Whether `filter` is a valid topic filter: not empty, no NUL, `#` only as
/// the whole last level, `+` only as a whole level.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        if level.contains('#') && (level != "#" || !last) {
            return false;
        }
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}

/// MQTT matching of a topic name against a filter (both assumed valid).
pub fn topic_matches(topic: &str, filter: &str) -> bool {
    let dollar = topic.starts_with('$');
    let mut topic_levels = topic.split('/');
    for (depth, f) in filter.split('/').enumerate() {
        if f == "#" {
            // `a/#` matches `a` too; `#` and `+/...` never match `$...`.
            return !(depth == 0 && dollar);
        }
        match topic_levels.next() {
            None => return false,
            Some(_) if f == "+" => {
                if depth == 0 && dollar {
                    return false;
                }
            }
            Some(t) if t == f => {}
            Some(_) => return false,
        }
    }
    topic_levels.next().is_none()
}

/// Whether the union of `patterns` matches every topic `filter` matches.
///
/// Exact: at each wildcard of the filter, only the literal levels the
/// patterns mention at that depth, plus one level none mentions, can make a
/// difference, and below the deepest pattern only `#` patterns still match.
/// The walk follows the filter level by level with the set of patterns still
/// alive, so it costs at most (literals + 1) branches per wildcard level,
/// bounded by [`MAX_STEPS`] (refused beyond: never allows too much).
pub fn covers(patterns: &[String], filter: &str) -> bool {
    let split: Vec<Vec<&str>> = patterns.iter().map(|p| p.split('/').collect()).collect();
    let filter: Vec<&str> = filter.split('/').collect();
    let alive: Vec<(usize, usize)> = (0..split.len()).map(|i| (i, 0)).collect();
    let mut steps = 0;
    walk(&split, &filter, 0, 0, &alive, &mut steps).unwrap_or(false)
}

/// Most walk steps one containment check may take.
pub const MAX_STEPS: usize = 20_000;

/// `alive`: (pattern, index of its next level) for patterns that match
/// every topic so far; `depth`: levels of the topic so far. `Some(true)`
/// when every topic matched by `filter[at..]` is matched by one of them;
/// `None` when out of steps.
fn walk(
    patterns: &[Vec<&str>],
    filter: &[&str],
    at: usize,
    depth: usize,
    alive: &[(usize, usize)],
    steps: &mut usize,
) -> Option<bool> {
    *steps += 1;
    if *steps > MAX_STEPS {
        return None;
    }
    if alive.is_empty() {
        return Some(false);
    }
    // A pattern at `#` matches everything from here, except a `$` first
    // level (a filter with a wildcard there never matches one either).
    let dollar_next = depth == 0 && filter.get(at).is_some_and(|l| l.starts_with('$'));
    if !dollar_next && alive.iter().any(|&(p, i)| patterns[p].get(i) == Some(&"#")) {
        return Some(true);
    }
    match filter.get(at) {
        // The filter's topics end here: some pattern must end here too.
        None => Some(alive.iter().any(|&(p, i)| i == patterns[p].len())),
        Some(&"#") => {
            // Topics ending here (`a/#` matches `a`) ...
            let ends_here = depth == 0 || alive.iter().any(|&(p, i)| i == patterns[p].len());
            if !ends_here {
                return Some(false);
            }
            // ... and every continuation by one more level, then `#` again.
            for level in choices(patterns, alive, depth) {
                let next = advance(patterns, alive, level, depth);
                if !walk(patterns, filter, at, depth + 1, &next, steps)? {
                    return Some(false);
                }
            }
            Some(true)
        }
        Some(&"+") => {
            for level in choices(patterns, alive, depth) {
                let next = advance(patterns, alive, level, depth);
                if !walk(patterns, filter, at + 1, depth + 1, &next, steps)? {
                    return Some(false);
                }
            }
            Some(true)
        }
        Some(literal) => {
            let next = advance(patterns, alive, Level::Literal(literal), depth);
            walk(patterns, filter, at + 1, depth + 1, &next, steps)
        }
    }
}

/// A level a topic can have at some position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level<'a> {
    /// This exact text.
    Literal(&'a str),
    /// Text no alive pattern names at this position.
    Other,
}

/// The levels worth trying where the filter has a wildcard: each literal an
/// alive pattern has next (not `$...` at depth 0: wildcards there never match
/// them), and one level none has.
fn choices<'a>(
    patterns: &[Vec<&'a str>],
    alive: &[(usize, usize)],
    depth: usize,
) -> Vec<Level<'a>> {
    let mut out = vec![Level::Other];
    for &(p, i) in alive {
        if let Some(&level) = patterns[p].get(i)
            && level != "+"
            && level != "#"
            && !(depth == 0 && level.starts_with('$'))
            && !out.contains(&Level::Literal(level))
        {
            out.push(Level::Literal(level));
        }
    }
    out
}

/// The patterns still alive after a topic level.
fn advance(
    patterns: &[Vec<&str>],
    alive: &[(usize, usize)],
    level: Level<'_>,
    depth: usize,
) -> Vec<(usize, usize)> {
    let dollar = depth == 0 && matches!(level, Level::Literal(l) if l.starts_with('$'));
    alive
        .iter()
        .filter(|&&(p, i)| match (patterns[p].get(i), level) {
            (None, _) => false,
            (Some(&"#"), _) | (Some(&"+"), _) => !dollar,
            (Some(&text), Level::Literal(l)) => text == l,
            (Some(_), Level::Other) => false,
        })
        .map(|&(p, i)| (p, i + 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(publish: &[&str], subscribe: &[&str]) -> ClientAcl {
        ClientAcl {
            publish: publish.iter().map(|s| s.to_string()).collect(),
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn matching_without_expanding_agrees_with_expanding() {
        let patterns = [
            "%t/%u/#",
            "%t/%c/telemetry",
            "spBv1.0/%t/+/%u",
            "spBv1.0/STATE/fieldlink-%t",
            "a/x%cy/+",
            "#",
            "+/%c",
            "%t",
        ];
        let who = [
            (Some("dev-1"), Some("dev-1"), Some("acme")),
            (Some("svc"), Some("c9"), Some("acme")),
            (None, Some("dev-1"), Some("acme")),
            (Some("#"), Some("+"), Some("acme")),
            (Some(""), Some("dev/1"), Some("acme")),
        ];
        let topics = [
            "acme/dev-1/telemetry",
            "acme/dev-1",
            "acme/dev-2/x",
            "acme/c9/telemetry",
            "spBv1.0/acme/NDATA/dev-1",
            "spBv1.0/STATE/fieldlink-acme",
            "a/xdev-1y/z",
            "a/xc9y/z",
            "a/xy/z",
            "x/dev-1",
            "acme",
            "$SYS/x",
            "acme/#/x",
        ];
        for p in patterns {
            let pattern = Pattern::new(p).expect("valid pattern");
            for (username, client_id, tenant) in who {
                let id = Identity {
                    username,
                    client_id,
                    tenant,
                };
                for topic in topics {
                    let expanded = pattern
                        .expand(&id)
                        .is_some_and(|f| topic_matches(topic, &f));
                    assert_eq!(
                        pattern.matches_topic(topic, &id),
                        expanded,
                        "pattern {p} topic {topic} identity {username:?} {client_id:?}"
                    );
                }
                let set = AclPatterns {
                    publish: vec![pattern.clone()],
                    subscribe: vec![],
                };
                for topic in topics {
                    assert_eq!(
                        set.allows_publish(topic, &id),
                        set.expand(&id).may_publish(topic),
                        "pattern {p} topic {topic}"
                    );
                }
            }
        }
    }

    #[test]
    fn topic_matching_follows_the_spec() {
        for (topic, filter, expected) in [
            ("a/b", "a/b", true),
            ("a/b", "a/+", true),
            ("a/b", "+/+", true),
            ("a/b", "#", true),
            ("a", "a/#", true),
            ("a/b/c", "a/#", true),
            ("a/b/c", "a/+", false),
            ("a", "a/+", false),
            ("a/b", "a", false),
            ("a//b", "a/+/b", true),
            ("/a", "+/a", true),
            ("$SYS/x", "#", false),
            ("$SYS/x", "+/x", false),
            ("$SYS/x", "$SYS/#", true),
            ("$SYS", "$SYS/#", true),
            ("b/a", "a/#", false),
        ] {
            assert_eq!(
                topic_matches(topic, filter),
                expected,
                "{topic} vs {filter}"
            );
        }
    }

    #[test]
    fn filter_and_topic_validity() {
        for f in ["#", "+", "a/#", "a/+/b", "+/+", "/", "a//b", "$share/g/a"] {
            assert!(valid_filter(f), "{f}");
        }
        for f in ["", "a#", "a/#/b", "a+/b", "a/b+", "##", "a/\0"] {
            assert!(!valid_filter(f), "{f:?}");
        }
        assert!(valid_topic("a/b"));
        for t in ["", "a/+", "a/#", "a\0"] {
            assert!(!valid_topic(t), "{t:?}");
        }
    }

    #[test]
    fn patterns_are_checked_and_expanded_safely() {
        assert!(Pattern::new("%t/%u/#").is_ok());
        assert!(Pattern::new("spBv1.0/%t/+/%u/#").is_ok());
        assert!(Pattern::new("a/%x").is_err());
        assert!(Pattern::new("a/#/b").is_err());
        assert!(Pattern::new("a/%").is_err());
        let p = Pattern::new("%t/%u/#").unwrap();
        let who = |u| Identity {
            username: Some(u),
            client_id: Some("c1"),
            tenant: Some("acme"),
        };
        assert_eq!(p.expand(&who("dev1")).as_deref(), Some("acme/dev1/#"));
        for bad in ["#", "+", "a/b", ""] {
            assert_eq!(p.expand(&who(bad)), None, "{bad:?}");
        }
        let no_user = Identity {
            username: None,
            client_id: Some("c"),
            tenant: Some("t"),
        };
        assert_eq!(p.expand(&no_user), None);
    }

    #[test]
    fn device_defaults_keep_a_device_to_its_own_topics() {
        let who = Identity {
            username: Some("dev1"),
            client_id: Some("dev1"),
            tenant: Some("acme"),
        };
        let acl = AclPatterns::device_defaults().expand(&who);
        for topic in [
            "acme/dev1/telemetry",
            "acme/dev1",
            "spBv1.0/acme/NBIRTH/dev1",
            "spBv1.0/acme/DDATA/dev1/motor",
        ] {
            assert!(acl.may_publish(topic), "{topic}");
        }
        for topic in [
            "acme/dev2/telemetry",
            "plant/dev1/telemetry",
            "spBv1.0/plant/NBIRTH/dev1",
            "spBv1.0/acme/NBIRTH/dev2",
            "spBv1.0/STATE/dev1",
            "$SYS/x",
            "acme/dev1/+",
        ] {
            assert!(!acl.may_publish(topic), "{topic}");
        }
        for filter in [
            "acme/dev1/#",
            "acme/dev1/cmd/+",
            "spBv1.0/acme/NCMD/dev1",
            "spBv1.0/acme/DCMD/dev1/#",
            "spBv1.0/acme/DCMD/dev1/+",
            "spBv1.0/STATE/+",
        ] {
            assert!(acl.may_subscribe(filter), "{filter}");
        }
        for filter in [
            "#",
            "+/#",
            "acme/#",
            "acme/+/telemetry",
            "plant/dev1/#",
            "spBv1.0/acme/+/dev1",
            "spBv1.0/#",
            "spBv1.0/+/NCMD/dev1",
            "$SYS/#",
        ] {
            assert!(!acl.may_subscribe(filter), "{filter}");
        }
    }

    #[test]
    fn service_defaults_cover_the_tenant_only() {
        let who = Identity {
            username: Some("gw"),
            client_id: Some("gw-1"),
            tenant: Some("acme"),
        };
        let acl = AclPatterns::service_defaults().expand(&who);
        assert!(acl.may_subscribe("acme/#"));
        assert!(acl.may_subscribe("spBv1.0/acme/#"));
        assert!(acl.may_publish("spBv1.0/STATE/gw-1"));
        assert!(!acl.may_publish("spBv1.0/STATE/other"));
        assert!(!acl.may_subscribe("#"));
        assert!(!acl.may_subscribe("+/dev1/#"));
        assert!(!acl.may_subscribe("spBv1.0/+/NDATA/#"));
        assert!(!acl.may_publish("plant/x"));
    }

    #[test]
    fn containment_uses_the_union_of_patterns() {
        let a = acl(&[], &["t", "t/+", "t/+/#"]);
        assert!(a.may_subscribe("t/#"));
        let b = acl(&[], &["t/+", "t/+/#"]);
        assert!(!b.may_subscribe("t/#"), "t itself is not covered");
        let c = acl(&[], &["t/a", "t/b"]);
        assert!(!c.may_subscribe("t/+"));
        assert!(c.may_subscribe("t/a"));
        let d = acl(&[], &["+/x", "a/+"]);
        assert!(d.may_subscribe("a/x"));
        assert!(!d.may_subscribe("+/+"));
        let e = acl(&[], &["#"]);
        assert!(e.may_subscribe("#"));
        assert!(e.may_subscribe("a/+/b/#"));
    }

    /// Brute force: every topic over a small alphabet (with a level no
    /// pattern names) up to one level past the longest pattern.
    fn brute_covers(patterns: &[String], filter: &str) -> bool {
        const ALPHABET: [&str; 4] = ["a", "b", "$s", "z"];
        let max_len = patterns
            .iter()
            .map(|p| p.split('/').count())
            .chain([filter.split('/').count()])
            .max()
            .unwrap_or(1)
            + 1;
        let mut topics: Vec<String> = ALPHABET.iter().map(|s| s.to_string()).collect();
        let mut all = topics.clone();
        for _ in 1..max_len {
            topics = topics
                .iter()
                .flat_map(|t| ALPHABET.iter().map(move |l| format!("{t}/{l}")))
                .collect();
            all.extend(topics.iter().cloned());
        }
        all.iter()
            .filter(|t| topic_matches(t, filter))
            .all(|t| patterns.iter().any(|p| topic_matches(t, p)))
    }

    /// Every filter over a small alphabet, up to `len` levels.
    fn filters(len: usize) -> Vec<String> {
        const LEVELS: [&str; 4] = ["a", "b", "$s", "+"];
        let mut current: Vec<String> = LEVELS.iter().map(|s| s.to_string()).collect();
        let mut all = current.clone();
        all.push("#".into());
        for _ in 1..len {
            let next: Vec<String> = current
                .iter()
                .flat_map(|f| LEVELS.iter().map(move |l| format!("{f}/{l}")))
                .collect();
            all.extend(current.iter().map(|f| format!("{f}/#")));
            all.extend(next.iter().cloned());
            current = next;
        }
        all
    }

    #[test]
    fn containment_agrees_with_brute_force_on_every_small_case() {
        let candidates = filters(3);
        // Every pattern set of one or two patterns of up to 2 levels, against
        // every filter of up to 3 levels.
        let short: Vec<String> = filters(2);
        let mut checked = 0;
        for (i, p1) in short.iter().enumerate() {
            for p2 in short.iter().skip(i) {
                let set = vec![p1.clone(), p2.clone()];
                for filter in &candidates {
                    assert_eq!(
                        covers(&set, filter),
                        brute_covers(&set, filter),
                        "patterns {set:?}, filter {filter}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 30_000, "{checked}");
    }

    #[test]
    fn hostile_filters_are_bounded() {
        let patterns: Vec<String> = (0..50).map(|i| format!("t/{i}/+/+/+/+/+/+/+/+")).collect();
        let filter = "+/+/+/+/+/+/+/+/+/+";
        // Refused (and quickly: the step budget bounds it).
        assert!(!covers(&patterns, filter));
    }
}
