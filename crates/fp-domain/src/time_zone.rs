//! Users' time zones: a zone chosen by its IANA name (`Europe/Berlin`), and the zone of a user who
//! chose none, read from the region of the browser's preferred language (`de-AT` → Vienna).
//!
//! Both rules live here, not in the dashboard: which names are zones is checked by the api (which
//! stores the choice) and relied on by the dashboard (which shows times in it), and which zone a
//! region means is a rule about users, not about markup. Pure: no clock, no tzdata on the machine
//! (the zone database is compiled in).

use std::sync::LazyLock;

pub use chrono_tz::Tz;

/// Where the region of a browser's language says nothing (no region, or one spread over several
/// zones with none dominant): the time the stored instants are in.
pub const FALLBACK: Tz = Tz::UTC;

/// A name that is no zone of the IANA database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a time zone of the IANA database (e.g. Europe/Berlin, America/New_York, UTC)"
)]
pub struct UnknownTimeZone(pub String);

/// The zone named `name`, exactly as the IANA database spells it.
pub fn parse(name: &str) -> Result<Tz, UnknownTimeZone> {
    name.parse::<Tz>()
        .map_err(|_| UnknownTimeZone(name.to_owned()))
}

/// Every zone name, sorted: the choices of a zone picker.
pub fn names() -> &'static [&'static str] {
    static NAMES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
        let mut names: Vec<&'static str> = chrono_tz::TZ_VARIANTS
            .iter()
            .map(|zone| zone.name())
            .collect();
        names.sort_unstable();
        names
    });
    &NAMES
}

/// Regions (ISO 3166-1, as in `de-DE`) whose clocks (nearly) all follow one zone, or where one
/// zone is where most of the people are (the United States: the east coast; Canada: Toronto;
/// Australia: Sydney; Brazil: São Paulo). Anything else is [`FALLBACK`].
const REGION_ZONES: &[(&str, Tz)] = &[
    ("AR", Tz::America__Argentina__Buenos_Aires),
    ("AT", Tz::Europe__Vienna),
    ("AU", Tz::Australia__Sydney),
    ("BE", Tz::Europe__Brussels),
    ("BG", Tz::Europe__Sofia),
    ("BR", Tz::America__Sao_Paulo),
    ("CA", Tz::America__Toronto),
    ("CH", Tz::Europe__Zurich),
    ("CN", Tz::Asia__Shanghai),
    ("CY", Tz::Asia__Nicosia),
    ("CZ", Tz::Europe__Prague),
    ("DE", Tz::Europe__Berlin),
    ("DK", Tz::Europe__Copenhagen),
    ("EE", Tz::Europe__Tallinn),
    ("ES", Tz::Europe__Madrid),
    ("FI", Tz::Europe__Helsinki),
    ("FR", Tz::Europe__Paris),
    ("GB", Tz::Europe__London),
    ("GR", Tz::Europe__Athens),
    ("HK", Tz::Asia__Hong_Kong),
    ("HR", Tz::Europe__Zagreb),
    ("HU", Tz::Europe__Budapest),
    ("IE", Tz::Europe__Dublin),
    ("IL", Tz::Asia__Jerusalem),
    ("IN", Tz::Asia__Kolkata),
    ("IS", Tz::Atlantic__Reykjavik),
    ("IT", Tz::Europe__Rome),
    ("JP", Tz::Asia__Tokyo),
    ("KR", Tz::Asia__Seoul),
    ("LI", Tz::Europe__Vaduz),
    ("LT", Tz::Europe__Vilnius),
    ("LU", Tz::Europe__Luxembourg),
    ("LV", Tz::Europe__Riga),
    ("MT", Tz::Europe__Malta),
    ("MX", Tz::America__Mexico_City),
    ("NL", Tz::Europe__Amsterdam),
    ("NO", Tz::Europe__Oslo),
    ("NZ", Tz::Pacific__Auckland),
    ("PL", Tz::Europe__Warsaw),
    ("PT", Tz::Europe__Lisbon),
    ("RO", Tz::Europe__Bucharest),
    ("SE", Tz::Europe__Stockholm),
    ("SG", Tz::Asia__Singapore),
    ("SI", Tz::Europe__Ljubljana),
    ("SK", Tz::Europe__Bratislava),
    ("TR", Tz::Europe__Istanbul),
    ("TW", Tz::Asia__Taipei),
    ("UA", Tz::Europe__Kyiv),
    ("US", Tz::America__New_York),
    ("ZA", Tz::Africa__Johannesburg),
];

/// The zone of a user who chose none, from the browser's `Accept-Language`: the region of the
/// highest-ranked language tag that names one (`de-DE,de;q=0.9` → Germany → `Europe/Berlin`;
/// `de,en-GB;q=0.8` → London), [`FALLBACK`] when that region is not in the table or no tag has a
/// region.
pub fn from_accept_language(header: &str) -> Tz {
    let mut tags: Vec<(&str, f32)> = header
        .split(',')
        .filter_map(|entry| {
            let mut parts = entry.trim().split(';');
            let tag = parts.next()?.trim();
            let quality = parts
                .find_map(|part| part.trim().strip_prefix("q="))
                .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())?;
            (quality > 0.0 && !tag.is_empty()).then_some((tag, quality))
        })
        .collect();
    // Stable: of equal qualities, the header's order (its order of preference) stays.
    tags.sort_by(|a, b| b.1.total_cmp(&a.1));
    tags.into_iter()
        .find_map(|(tag, _)| region(tag))
        .and_then(|region| {
            REGION_ZONES
                .iter()
                .find(|(code, _)| code.eq_ignore_ascii_case(region))
        })
        .map_or(FALLBACK, |(_, zone)| *zone)
}

/// The region subtag of a language tag (BCP 47): two letters or three digits after the language
/// and an optional four-letter script (`zh-Hant-TW` → `TW`, `es-419` → `419`).
fn region(tag: &str) -> Option<&str> {
    tag.split(['-', '_'])
        .skip(1)
        .find(|subtag| subtag.len() != 4)
        .filter(|subtag| {
            (subtag.len() == 2 && subtag.chars().all(|c| c.is_ascii_alphabetic()))
                || (subtag.len() == 3 && subtag.chars().all(|c| c.is_ascii_digit()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_language_region_names_its_zone() {
        for (header, zone) in [
            ("de-DE", Tz::Europe__Berlin),
            ("de-DE,de;q=0.9,en;q=0.8", Tz::Europe__Berlin),
            ("de-AT", Tz::Europe__Vienna),
            ("de-ch", Tz::Europe__Zurich),
            ("fr-CH", Tz::Europe__Zurich),
            ("en-GB,en;q=0.9", Tz::Europe__London),
            ("en-US,en;q=0.9", Tz::America__New_York),
            ("fr-FR", Tz::Europe__Paris),
            ("zh-Hant-TW", Tz::Asia__Taipei),
            ("en_GB", Tz::Europe__London),
            // The highest-ranked tag with a region decides, not the first one written.
            ("en-US;q=0.5,de-AT;q=0.9", Tz::Europe__Vienna),
            ("de,en-GB;q=0.8", Tz::Europe__London),
        ] {
            assert_eq!(from_accept_language(header), zone, "{header}");
        }
    }

    #[test]
    fn anything_else_is_utc() {
        for header in [
            "",
            "de",
            "en,de;q=0.5",
            "es-419",
            "ru-XX",
            "de-DE;q=0",
            "de-DE;q=zz",
            "*",
            "x-klingon",
            "de-Latn",
        ] {
            assert_eq!(from_accept_language(header), FALLBACK, "{header:?}");
        }
    }

    #[test]
    fn zones_are_known_by_their_iana_names_only() {
        assert_eq!(parse("Europe/Berlin"), Ok(Tz::Europe__Berlin));
        assert_eq!(parse("UTC"), Ok(Tz::UTC));
        for unknown in [
            "",
            "Europe/Atlantis",
            "europe/berlin",
            " Europe/Berlin",
            "CET+1",
        ] {
            assert_eq!(parse(unknown), Err(UnknownTimeZone(unknown.to_owned())));
        }
        let names = names();
        assert!(names.len() > 400, "{}", names.len());
        assert!(names.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(names.iter().all(|name| parse(name).is_ok()));
        assert!(names.contains(&"America/New_York"));
    }

    #[test]
    fn every_region_is_listed_once() {
        let mut regions: Vec<&str> = REGION_ZONES.iter().map(|(region, _)| *region).collect();
        regions.dedup();
        assert_eq!(regions.len(), REGION_ZONES.len());
        assert!(regions.windows(2).all(|pair| pair[0] < pair[1]), "sorted");
    }
}
