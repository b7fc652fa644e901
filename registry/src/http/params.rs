//! Query parameters, parsed strictly: an unknown parameter or a bad value is
//! a 400 that names it.

use std::collections::HashMap;
use std::str::FromStr;

use fieldlink_model::Day;

use super::AppError;
use crate::Shared;

/// The raw query of a request, with the names the endpoint accepts.
#[derive(Debug)]
pub(crate) struct Params {
    raw: HashMap<String, String>,
}

impl Params {
    /// Checks that every given parameter is one of `allowed`.
    pub(crate) fn new(raw: HashMap<String, String>, allowed: &[&str]) -> Result<Self, AppError> {
        let mut unknown: Vec<&String> = raw
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .collect();
        unknown.sort();
        if let Some(name) = unknown.first() {
            return Err(AppError::bad_request(format!(
                "unknown parameter `{name}` (accepted: {})",
                allowed.join(", ")
            )));
        }
        Ok(Params { raw })
    }

    /// A non-empty value, if given.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.raw
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A value parsed with `FromStr`, if given.
    pub(crate) fn parse<T>(&self, name: &str) -> Result<Option<T>, AppError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        self.get(name)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|e| AppError::bad_request(format!("{name}: {e}")))
            })
            .transpose()
    }

    /// `true` or `false`, if given.
    pub(crate) fn flag(&self, name: &str) -> Result<Option<bool>, AppError> {
        match self.get(name) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(AppError::bad_request(format!(
                "{name}: `{other}` is not true or false"
            ))),
        }
    }

    /// The `day` parameter (default today), inside the retention window.
    pub(crate) fn day(&self, shared: &Shared) -> Result<Day, AppError> {
        let today = shared.today();
        let Some(day) = self.parse::<Day>("day")? else {
            return Ok(today);
        };
        let oldest = shared.oldest_day();
        if day < oldest {
            return Err(AppError::bad_request(format!(
                "day: {day} is before the retention window (oldest kept: {oldest})"
            )));
        }
        if day > today.plus(1) {
            return Err(AppError::bad_request(format!(
                "day: {day} is in the future (today is {today})"
            )));
        }
        Ok(day)
    }
}
