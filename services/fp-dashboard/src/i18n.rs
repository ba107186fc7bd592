//! German and English. Texts live in `locales/<lang>/<area>.toml`, embedded in the binary; a page
//! reads them in its template as `t.<area>.<key>`. The language comes from the `fp_lang` cookie
//! (set by the switch in the header), else from the browser's `Accept-Language`, else English.

use std::collections::BTreeSet;

use actix_web::HttpRequest;
use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use serde_json::Value;

pub const LANG_COOKIE: &str = "fp_lang";

/// Every catalog file: language, area (the key under `t`), text. Add both languages of an area.
const CATALOGS: &[(Lang, &str, &str)] = &[
    (
        Lang::En,
        "common",
        include_str!("../locales/en/common.toml"),
    ),
    (
        Lang::De,
        "common",
        include_str!("../locales/de/common.toml"),
    ),
    (
        Lang::En,
        "integrations",
        include_str!("../locales/en/integrations.toml"),
    ),
    (
        Lang::De,
        "integrations",
        include_str!("../locales/de/integrations.toml"),
    ),
    (
        Lang::En,
        "account",
        include_str!("../locales/en/account.toml"),
    ),
    (
        Lang::De,
        "account",
        include_str!("../locales/de/account.toml"),
    ),
    (Lang::En, "logs", include_str!("../locales/en/logs.toml")),
    (Lang::De, "logs", include_str!("../locales/de/logs.toml")),
    (
        Lang::En,
        "deliveries",
        include_str!("../locales/en/deliveries.toml"),
    ),
    (
        Lang::De,
        "deliveries",
        include_str!("../locales/de/deliveries.toml"),
    ),
    (
        Lang::En,
        "recover",
        include_str!("../locales/en/recover.toml"),
    ),
    (
        Lang::De,
        "recover",
        include_str!("../locales/de/recover.toml"),
    ),
    (
        Lang::En,
        "event_types",
        include_str!("../locales/en/event_types.toml"),
    ),
    (
        Lang::En,
        "retention",
        include_str!("../locales/en/retention.toml"),
    ),
    (
        Lang::De,
        "retention",
        include_str!("../locales/de/retention.toml"),
    ),
    (
        Lang::De,
        "event_types",
        include_str!("../locales/de/event_types.toml"),
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    De,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::De];

    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::De => "de",
        }
    }

    pub fn from_code(code: &str) -> Option<Lang> {
        Lang::ALL
            .into_iter()
            .find(|lang| lang.code().eq_ignore_ascii_case(code))
    }

    /// The language of a request: the user's choice, else the browser's, else English.
    pub fn of(request: &HttpRequest) -> Lang {
        request
            .cookie(LANG_COOKIE)
            .and_then(|cookie| Lang::from_code(cookie.value()))
            .or_else(|| {
                request
                    .headers()
                    .get(header::ACCEPT_LANGUAGE)
                    .and_then(|value| value.to_str().ok())
                    .and_then(preferred_in_accept_language)
            })
            .unwrap_or(Lang::En)
    }
}

/// The supported language the browser ranks highest (`de-DE,de;q=0.9,en;q=0.8` → German).
fn preferred_in_accept_language(header: &str) -> Option<Lang> {
    header
        .split(',')
        .filter_map(|entry| {
            let mut parts = entry.trim().split(';');
            let tag = parts.next()?.trim();
            let quality = parts
                .find_map(|part| part.trim().strip_prefix("q="))
                .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())?;
            let primary = tag.split('-').next()?;
            Some((Lang::from_code(primary)?, quality))
        })
        .filter(|(_, quality)| *quality > 0.0)
        // The first of equal qualities wins, as the header lists them in order of preference.
        .fold(
            None,
            |best: Option<(Lang, f32)>, (lang, quality)| match best {
                Some((_, best_quality)) if best_quality >= quality => best,
                _ => Some((lang, quality)),
            },
        )
        .map(|(lang, _)| lang)
}

/// Remembers the user's choice for a year.
pub fn lang_cookie(lang: Lang) -> Cookie<'static> {
    Cookie::build(LANG_COOKIE, lang.code())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .max_age(CookieDuration::days(365))
        .finish()
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("locales/{lang}/{area}.toml does not parse: {error}")]
    Parse {
        lang: &'static str,
        area: &'static str,
        error: toml::de::Error,
    },
    #[error("the languages' texts differ; keys only in some languages: {0:?}")]
    Mismatch(Vec<String>),
}

/// The texts of both languages, each a tree `area -> key -> text`.
pub struct Catalog {
    english: Value,
    german: Value,
}

impl Catalog {
    pub fn load() -> Result<Self, CatalogError> {
        let mut english = serde_json::Map::new();
        let mut german = serde_json::Map::new();
        for (lang, area, text) in CATALOGS {
            let table: Value = toml::from_str(text).map_err(|error| CatalogError::Parse {
                lang: lang.code(),
                area,
                error,
            })?;
            let target = match lang {
                Lang::En => &mut english,
                Lang::De => &mut german,
            };
            target.insert((*area).to_owned(), table);
        }
        let (english, german) = (Value::Object(english), Value::Object(german));
        let (english_keys, german_keys) = (key_paths(&english), key_paths(&german));
        let mismatched: Vec<String> = english_keys
            .symmetric_difference(&german_keys)
            .cloned()
            .collect();
        if !mismatched.is_empty() {
            return Err(CatalogError::Mismatch(mismatched));
        }
        Ok(Catalog { english, german })
    }

    /// What templates see as `t`.
    pub fn texts(&self, lang: Lang) -> &Value {
        match lang {
            Lang::En => &self.english,
            Lang::De => &self.german,
        }
    }

    /// One text by its dotted path (`common.errors.not_found_heading`), for messages built in
    /// Rust; the path itself if it is missing, so a gap shows instead of failing the page.
    pub fn text<'a>(&'a self, lang: Lang, path: &'a str) -> &'a str {
        path.split('.')
            .try_fold(self.texts(lang), |node, key| node.get(key))
            .and_then(Value::as_str)
            .unwrap_or(path)
    }
}

fn key_paths(value: &Value) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    collect_paths(value, String::new(), &mut paths);
    paths
}

fn collect_paths(value: &Value, prefix: String, paths: &mut BTreeSet<String>) {
    match value {
        Value::Object(fields) => {
            for (key, child) in fields {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                collect_paths(child, path, paths);
            }
        }
        _ => {
            paths.insert(prefix);
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn both_languages_have_every_text() {
        let catalog = Catalog::load().expect("catalogs load and match");
        assert_eq!(
            catalog.text(Lang::De, "common.nav_settings"),
            "Einstellungen"
        );
        assert_eq!(catalog.text(Lang::En, "common.nav_settings"), "Settings");
        assert_eq!(
            catalog.text(Lang::En, "common.no_such_key"),
            "common.no_such_key"
        );
    }

    #[test]
    fn the_browser_language_is_negotiated() {
        for (header, expected) in [
            ("de-DE,de;q=0.9,en;q=0.8", Lang::De),
            ("en-US,en;q=0.9,de;q=0.8", Lang::En),
            ("fr-FR,fr;q=0.9,de;q=0.5", Lang::De),
            ("de;q=0.2,en;q=0.7", Lang::En),
            ("fr", Lang::En),
            ("", Lang::En),
            ("de;q=0", Lang::En),
            ("de;q=zz", Lang::En),
        ] {
            let request = TestRequest::default()
                .insert_header((header::ACCEPT_LANGUAGE, header))
                .to_http_request();
            assert_eq!(Lang::of(&request), expected, "{header}");
        }
    }

    #[test]
    fn the_users_choice_beats_the_browser() {
        let request = TestRequest::default()
            .insert_header((header::ACCEPT_LANGUAGE, "en"))
            .cookie(lang_cookie(Lang::De))
            .to_http_request();
        assert_eq!(Lang::of(&request), Lang::De);
    }
}
