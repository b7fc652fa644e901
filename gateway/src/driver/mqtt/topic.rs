//! Topic templates: `{tenant}/{device_id}/telemetry`, `plant/+/{device_id}/#`.
//! A template is parsed once; matching a topic name walks its levels and
//! borrows the captured device id and tenant from the topic, without
//! allocating.

/// One level of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(Box<str>),
    DeviceId,
    Tenant,
    /// `+` or any other `{name}`: one level, not captured.
    Any,
    /// `#`: the rest (last level only).
    Rest,
}

/// A parsed topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    text: String,
    levels: Vec<Level>,
}

/// What a topic matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Captures<'t> {
    /// The `{device_id}` level, if the template has one.
    pub device_id: Option<&'t str>,
    /// The `{tenant}` level, if the template has one.
    pub tenant: Option<&'t str>,
}

impl TopicTemplate {
    /// Parses `text`. Placeholders fill a whole level; `#` only last;
    /// `{device_id}` at most once (exactly once when `need_device`).
    ///
    /// # Errors
    /// What is wrong, for the caller to prefix with the key.
    pub fn parse(text: &str, need_device: bool) -> Result<TopicTemplate, String> {
        if text.is_empty() || text.len() > 1024 {
            return Err("must be 1 to 1024 bytes".to_owned());
        }
        if text.chars().any(|c| c.is_control()) {
            return Err("contains a control character".to_owned());
        }
        let parts: Vec<&str> = text.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "{device_id}" => Level::DeviceId,
                "{tenant}" => Level::Tenant,
                "+" => Level::Any,
                "#" if i + 1 == parts.len() => Level::Rest,
                "#" => return Err("`#` must be the last level".to_owned()),
                p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => Level::Any,
                p if p.contains(['{', '}', '+', '#']) => {
                    return Err(format!(
                        "level `{p}`: a placeholder or wildcard must be a whole level"
                    ));
                }
                p => Level::Literal(p.into()),
            };
            levels.push(level);
        }
        let devices = levels.iter().filter(|l| **l == Level::DeviceId).count();
        if devices > 1 {
            return Err("`{device_id}` may appear once".to_owned());
        }
        if need_device && devices == 0 {
            return Err("needs a `{device_id}` level".to_owned());
        }
        if levels.iter().filter(|l| **l == Level::Tenant).count() > 1 {
            return Err("`{tenant}` may appear once".to_owned());
        }
        Ok(TopicTemplate {
            text: text.to_owned(),
            levels,
        })
    }

    /// The template as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether it has a `{device_id}` level.
    pub fn has_device(&self) -> bool {
        self.levels.contains(&Level::DeviceId)
    }

    /// The subscription filter: placeholders become `+`, `{tenant}` the
    /// tenant when one is configured.
    pub fn filter(&self, tenant: Option<&str>) -> String {
        let mut out = String::with_capacity(self.text.len());
        for (i, level) in self.levels.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            match level {
                Level::Literal(s) => out.push_str(s),
                Level::Tenant => out.push_str(tenant.unwrap_or("+")),
                Level::DeviceId | Level::Any => out.push('+'),
                Level::Rest => out.push('#'),
            }
        }
        out
    }

    /// The topic of device `device_id` (placeholders other than the device
    /// and tenant must not be present): for a device's own status or meta
    /// topic.
    pub fn render(&self, tenant: &str, device_id: &str) -> Option<String> {
        let mut out = String::with_capacity(self.text.len() + device_id.len());
        for (i, level) in self.levels.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            match level {
                Level::Literal(s) => out.push_str(s),
                Level::Tenant => out.push_str(tenant),
                Level::DeviceId => out.push_str(device_id),
                Level::Any | Level::Rest => return None,
            }
        }
        Some(out)
    }

    /// Matches a topic name; `None` when it does not fit.
    pub fn captures<'t>(&self, topic: &'t str) -> Option<Captures<'t>> {
        let mut captures = Captures {
            device_id: None,
            tenant: None,
        };
        // Wildcards never match `$` topics at the first level (MQTT 4.7.2).
        if topic.starts_with('$') && !matches!(self.levels.first(), Some(Level::Literal(_))) {
            return None;
        }
        let mut names = topic.split('/');
        for level in &self.levels {
            if *level == Level::Rest {
                return Some(captures);
            }
            let name = names.next()?;
            match level {
                Level::Literal(s) if **s == *name => {}
                Level::Literal(_) => return None,
                Level::DeviceId => captures.device_id = Some(name),
                Level::Tenant => captures.tenant = Some(name),
                Level::Any | Level::Rest => {}
            }
        }
        names.next().is_none().then_some(captures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_and_capture() {
        let t = TopicTemplate::parse("{tenant}/{device_id}/telemetry", true).unwrap();
        assert_eq!(t.filter(Some("acme")), "acme/+/telemetry");
        assert_eq!(t.filter(None), "+/+/telemetry");
        assert_eq!(
            t.captures("acme/m-1/telemetry"),
            Some(Captures {
                device_id: Some("m-1"),
                tenant: Some("acme")
            })
        );
        assert_eq!(t.captures("acme/m-1/status"), None);
        assert_eq!(t.captures("acme/m-1/telemetry/x"), None);
        assert_eq!(t.captures("$SYS/m-1/telemetry"), None);
        assert_eq!(t.render("acme", "m-1").unwrap(), "acme/m-1/telemetry");
        let t = TopicTemplate::parse("plant/{line}/{device_id}/#", true).unwrap();
        assert_eq!(t.filter(None), "plant/+/+/#");
        assert_eq!(
            t.captures("plant/l1/d9/a/b").and_then(|c| c.device_id),
            Some("d9")
        );
        assert_eq!(t.captures("plant/l1"), None);
    }

    #[test]
    fn bad_templates_say_why() {
        for (text, want) in [
            ("a/#/b", "last"),
            ("a/x{device_id}", "whole level"),
            ("a/b", "needs"),
            ("{device_id}/{device_id}", "once"),
            ("", "1 to 1024"),
        ] {
            let err = TopicTemplate::parse(text, true).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
        assert!(TopicTemplate::parse("plant/line1/meter", false).is_ok());
    }
}
