//! Canonical API paths: the one form of a relative `/v2/…` path that is both judged (by the
//! scripts' allow-list) and sent. A path is percent-decoded once and refused if anything in it
//! could be read differently by a URL parser or a server: dot segments (in any encoding),
//! empty segments, backslashes, `;` parameters, a second layer of encoding, control or
//! non-ASCII characters, fragments. What survives is re-encoded from plain segments and query
//! pairs, so the text sent is exactly the text judged.

/// A relative DigitalOcean API path (and query) in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPath {
    segments: Vec<String>,
    query: Vec<(String, String)>,
    text: String,
}

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{path}` {reason}")]
pub struct PathError {
    /// The path as given, with control characters escaped.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Characters a path segment may hold once decoded: what API ids, slugs, UUIDs and tag names
/// use. Everything else (`.`, `%`, `;`, `\`, spaces) is refused rather than interpreted.
fn segment_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':')
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl ApiPath {
    /// Parses and canonicalises `raw`, which must start with `/v2/`.
    pub fn parse(raw: &str) -> Result<ApiPath, PathError> {
        let refuse = |reason: &str| PathError {
            path: raw.escape_default().to_string(),
            reason: reason.to_string(),
        };
        if raw.chars().any(|c| c.is_control() || !c.is_ascii()) {
            return Err(refuse(
                "holds control or non-ASCII characters: write a plain /v2/… path",
            ));
        }
        if raw.contains('#') {
            return Err(refuse("holds a fragment (`#`): write a plain /v2/… path"));
        }
        let (path, query) = match raw.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (raw, None),
        };
        if path.to_ascii_lowercase().contains("%2f") {
            return Err(refuse(
                "holds an encoded `/` (`%2F`): write a plain /v2/… path",
            ));
        }
        let decoded = percent_decode(path)
            .ok_or_else(|| refuse("holds a broken percent-encoding: write a plain /v2/… path"))?;
        if decoded.contains('%') {
            return Err(refuse(
                "is encoded twice (`%25…`): write a plain /v2/… path",
            ));
        }
        if decoded.contains('\\') {
            return Err(refuse("holds a backslash: write a plain /v2/… path"));
        }
        if decoded.contains(';') {
            return Err(refuse("holds a `;` parameter: write a plain /v2/… path"));
        }
        let Some(rest) = decoded.strip_prefix('/') else {
            return Err(refuse(
                "must be a relative API path such as /v2/load_balancers/ID",
            ));
        };
        let segments: Vec<String> = rest.split('/').map(str::to_string).collect();
        for segment in &segments {
            if segment.is_empty() {
                return Err(refuse(
                    "holds an empty segment (`//` or a trailing `/`): write a plain /v2/… path",
                ));
            }
            if segment == "." || segment == ".." {
                return Err(refuse(
                    "holds a dot segment (`.` or `..`, in any encoding): write a plain /v2/… path",
                ));
            }
            if !segment.chars().all(segment_char_ok) {
                return Err(refuse(
                    "holds a character outside letters, digits, `-`, `_` and `:` in a segment",
                ));
            }
        }
        if segments.first().map(String::as_str) != Some("v2") {
            return Err(refuse(
                "must be a relative API path such as /v2/load_balancers/ID",
            ));
        }
        let mut pairs = Vec::new();
        if let Some(query) = query {
            for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
                if key.chars().chain(value.chars()).any(char::is_control) {
                    return Err(refuse("holds control characters in its query"));
                }
                pairs.push((key.into_owned(), value.into_owned()));
            }
        }
        let mut text = format!("/{}", segments.join("/"));
        if !pairs.is_empty() {
            let encoded: String = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs.iter())
                .finish();
            text.push('?');
            text.push_str(&encoded);
        }
        // The URL parser the request goes out through must read the same path: a last guard
        // against any normalisation this function does not know of.
        let probe = url::Url::parse("http://api.invalid")
            .and_then(|base| base.join(&text))
            .map_err(|_| refuse("is not a valid URL path"))?;
        if probe.path() != format!("/{}", segments.join("/")) {
            return Err(refuse(
                "would be read differently by the URL parser: write a plain /v2/… path",
            ));
        }
        Ok(ApiPath {
            segments,
            query: pairs,
            text,
        })
    }

    /// The decoded segments, `v2` first.
    pub fn segments(&self) -> Vec<&str> {
        self.segments.iter().map(String::as_str).collect()
    }

    /// The decoded query pairs.
    pub fn query(&self) -> &[(String, String)] {
        &self.query
    }

    /// The canonical text: exactly what is sent.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for ApiPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_are_kept() {
        let path = ApiPath::parse("/v2/load_balancers/4de7ac8b-495b/droplets").unwrap();
        assert_eq!(path.as_str(), "/v2/load_balancers/4de7ac8b-495b/droplets");
        assert_eq!(
            path.segments(),
            ["v2", "load_balancers", "4de7ac8b-495b", "droplets"]
        );
        let listed = ApiPath::parse("/v2/droplets?tag_name=web&page=2").unwrap();
        assert_eq!(listed.as_str(), "/v2/droplets?tag_name=web&page=2");
        let encoded = ApiPath::parse("/v2/tags/do-scaler%3Adefault").unwrap();
        assert_eq!(encoded.as_str(), "/v2/tags/do-scaler:default");
    }

    #[test]
    fn every_spelling_of_a_way_out_is_refused() {
        for raw in [
            "/v2/load_balancers/%2e%2e/droplets?tag_name=web",
            "/v2/load_balancers/%2E%2E/droplets",
            "/v2/load_balancers/.%2e/droplets",
            "/v2/load_balancers/%2e./droplets",
            "/v2/load_balancers/../droplets",
            "/v2/load_balancers/./x/droplets",
            "/v2/load_balancers/%252e%252e/droplets",
            "/v2/load_balancers/x%2f..%2f../droplets",
            "/v2/load_balancers/x%2Fdroplets",
            "/v2/load_balancers//droplets",
            "/v2/load_balancers/x\\..\\droplets",
            "/v2/load_balancers/x%5c..%5cdroplets",
            "/v2/load_balancers/..;/droplets",
            "/v2/load_balancers/x;y/droplets",
            "/v2/load_balancers/x%3b/droplets",
            "/v2/load_balancers/x/droplets/",
            "/v2/load_balancers/x/droplets#frag",
            "/v2/load_balancers/%00/droplets",
            "/v2/load_balancers/x\n/droplets",
            "/v2/load_balancers/%zz/droplets",
            "/v2/load_balancers/\u{ff0e}\u{ff0e}/droplets",
            "v2/droplets",
            "//evil.example/v2/droplets",
            "https://evil.example/v2/droplets",
            "/v3/droplets",
            "/v2/load_balancers/%20/droplets",
        ] {
            assert!(ApiPath::parse(raw).is_err(), "{raw:?} was accepted");
        }
    }

    #[test]
    fn a_refused_path_is_shown_escaped() {
        let error = ApiPath::parse("/v2/x\u{1b}[31m").unwrap_err();
        assert!(!error.to_string().contains('\u{1b}'), "{error}");
    }
}
