//! Word-level matching for policy terms. Terms match whole words so that
//! "sex" does not fire inside "sussex" and "cum" not inside "document";
//! a trailing `*` opts into prefix matching where inflections matter.

/// Lower case, every run of non-alphanumerics (apostrophes dropped, so
/// "someone's" is "someones") as one space, trimmed.
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = true;
    for c in text.chars() {
        // Apostrophes, and invisible characters, which would otherwise split
        // a word in two ("cl\u{200b}ass" is "class", not "cl" and "ass").
        if c == '\'' || c == '\u{2019}' || invisible(c) {
            continue;
        }
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
            space = false;
        } else if !space {
            out.push(' ');
            space = true;
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

/// Characters that show nothing: zero-width spaces and joiners, direction
/// marks, the word joiner and invisible operators, the byte-order mark,
/// soft hyphens. They carry no meaning in a prompt, only evasion.
pub fn invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{2060}'..='\u{2064}' | '\u{feff}' | '\u{00ad}' | '\u{180e}')
}

/// One policy term: a sequence of words, the last optionally a prefix.
#[derive(Debug, Clone)]
pub struct Term {
    pub text: String,
    words: Vec<String>,
    prefix: bool,
}

impl Term {
    pub fn new(raw: &str) -> Option<Term> {
        let prefix = raw.trim_end().ends_with('*');
        let words: Vec<String> = normalise(raw)
            .split(' ')
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect();
        if words.is_empty() {
            return None;
        }
        Some(Term {
            text: raw.trim().to_string(),
            words,
            prefix,
        })
    }

    /// Word positions `[start, end)` where the term occurs in `words`.
    pub fn find(&self, words: &[&str]) -> Vec<(usize, usize)> {
        let n = self.words.len();
        let mut hits = Vec::new();
        if words.len() < n {
            return hits;
        }
        for i in 0..=words.len() - n {
            let ok = self.words.iter().enumerate().all(|(j, t)| {
                if self.prefix && j == n - 1 {
                    words[i + j].starts_with(t.as_str())
                } else {
                    words[i + j] == t
                }
            });
            if ok {
                hits.push((i, i + n));
            }
        }
        hits
    }
}

/// Terms that fire in `words`, less those wholly inside an allowed phrase.
pub fn matches<'a>(terms: &'a [Term], allow: &[Term], words: &[&str]) -> Vec<&'a Term> {
    let allowed: Vec<(usize, usize)> = allow.iter().flat_map(|a| a.find(words)).collect();
    terms
        .iter()
        .filter(|t| {
            t.find(words)
                .iter()
                .any(|&(s, e)| !allowed.iter().any(|&(a, b)| a <= s && e <= b))
        })
        .collect()
}

pub fn terms(raw: &[String]) -> Vec<Term> {
    raw.iter().filter_map(|t| Term::new(t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> String {
        normalise(s)
    }

    #[test]
    fn normalises_case_punctuation_and_apostrophes() {
        assert_eq!(
            normalise("  Someone's FACE, smashed!! "),
            "someones face smashed"
        );
        assert_eq!(normalise("3d-print"), "3d print");
        assert_eq!(normalise("a cl\u{200b}ass\u{feff}room"), "a classroom");
    }

    #[test]
    fn whole_words_and_prefixes() {
        let n = words("a woman in sussex reading a document");
        let w: Vec<&str> = n.split(' ').collect();
        let t = terms(&["sex".into(), "cum".into()]);
        assert!(matches(&t, &[], &w).is_empty());
        let n = words("nude man masturbating on camera");
        let w: Vec<&str> = n.split(' ').collect();
        let t = terms(&["masturbat*".into(), "on camera".into()]);
        assert_eq!(matches(&t, &[], &w).len(), 2);
    }

    #[test]
    fn allowed_phrases_cancel_only_what_they_cover() {
        let t = terms(&["breast*".into()]);
        let allow = terms(&["chicken breast".into()]);
        let n = words("a chef slicing chicken breast");
        let w: Vec<&str> = n.split(' ').collect();
        assert!(matches(&t, &allow, &w).is_empty());
        let n = words("chicken breast and bare breasts");
        let w: Vec<&str> = n.split(' ').collect();
        assert_eq!(matches(&t, &allow, &w).len(), 1);
    }
}
