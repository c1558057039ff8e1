//! Undoing the ways a prompt is written to slip past word checks, so the
//! checks can also read it as its author meant it:
//!
//! - look-alike letters from other scripts, styled and fullwidth alphabets,
//!   accents, Zalgo marks and invisible characters, folded to plain
//!   lower-case Latin by `decancer` (a maintained table of Unicode
//!   confusables: no reason to keep our own);
//! - leetspeak: digits and symbols standing for letters inside a word
//!   ("k1ll", "n@k3d", "$lut"), read as those letters;
//! - spacing: letters set apart by spaces or punctuation ("n u d e",
//!   "k.i.l.l"), joined back into one word.
//!
//! The result is a second reading of the prompt, checked *beside* the
//! original (never instead of it): folding is lossy (other scripts become
//! Latin look-alikes, "4k" reads "ak"), so it may only add a block.

use decancer::Options;

use super::text::{invisible, normalise};

/// The prompt as an evader meant it: folded, leet read as letters, spaced
/// letters joined; lower case, words separated by single spaces (like
/// [`normalise`]).
pub fn unevade(text: &str) -> String {
    // Invisible characters first: decancer reads a zero-width space as a
    // space, which would split the word it hides in.
    let visible: String = text.chars().filter(|&c| !invisible(c)).collect();
    // Bidirectional reordering is off: decancer 3.3.3 panics on some mixes
    // of direction marks (found by tests/fuzz.rs), and a reading for word
    // matching does not need display order. The panic guard stays for any
    // other such input: prompt text is untrusted, and a library's panic
    // must not take the stage thread down; the plain reading still decides.
    let cured = std::panic::catch_unwind(|| {
        decancer::cure(&visible, Options::default().disable_bidi()).map(|c| c.as_ref().to_string())
    });
    let folded = match cured {
        Ok(Ok(c)) => c,
        _ => visible.to_lowercase(),
    };
    let deleet: Vec<String> = folded.split(' ').map(read_leet).collect();
    normalise(&join_spaced(&deleet.join(" ")))
}

/// A digit or symbol that stands for a letter inside a word.
fn leet(c: char) -> Option<char> {
    Some(match c {
        '0' => 'o',
        '1' | '!' | '|' => 'i',
        '3' => 'e',
        '4' | '@' => 'a',
        '5' | '$' => 's',
        '7' | '+' => 't',
        '8' => 'b',
        '9' => 'g',
        _ => return None,
    })
}

/// One whitespace-separated token with its leet characters read as
/// letters, when it looks like a word written in leet: a letter or more,
/// a leet character or more, no other digit ("k1ll", "3mm4", "n00$3",
/// "$lut", "n@k3d"). Sizes and numbers ("4k", "1080p", "24fps") stay as
/// written, as does punctuation after a word ("wow!"); a name with digits
/// may be misread ("mp4" reads "mpa"), which only costs a second reading
/// that matches nothing.
fn read_leet(token: &str) -> String {
    let chars: Vec<char> = token.chars().collect();
    let letter = |c: char| c.is_alphabetic();
    // The word: from its first letter or leet character to its last
    // letter, digit, `$` or `@` (so "wow!" ends at "w").
    let first = chars.iter().position(|&c| letter(c) || leet(c).is_some());
    let last = chars
        .iter()
        .rposition(|&c| letter(c) || c.is_ascii_digit() || c == '$' || c == '@');
    let (Some(a), Some(b)) = (first, last) else {
        return token.to_string();
    };
    if a > b {
        return token.to_string();
    }
    let core = &chars[a..=b];
    let letters = core.iter().filter(|&&c| letter(c)).count();
    let leets = core.iter().filter(|&&c| leet(c).is_some()).count();
    let other_digits = chars
        .iter()
        .any(|&c| c.is_ascii_digit() && leet(c).is_none());
    // A number with a short unit ("4k", "3d", "1080p", "60fps") stays a
    // number; any digit that is not leet marks a number or a name
    // ("24fps", "h264").
    let digits = core.iter().take_while(|c| c.is_ascii_digit()).count();
    let unit = digits > 0 && core[digits..].iter().all(|&c| letter(c)) && core.len() - digits <= 3;
    if letters == 0 || leets == 0 || other_digits || unit {
        return token.to_string();
    }
    let mut out: String = chars[..a].iter().collect();
    out.extend(core.iter().map(|&c| leet(c).unwrap_or(c)));
    out.extend(chars[b + 1..].iter());
    out
}

/// Joins letters set apart by one separator each ("n u d e", "k.i.l.l",
/// "s-h-o-o-t"): runs of three or more single letters. Anything wider (two
/// spaces, a comma) ends the run, so "k i l l  t h e  m a n" reads "kill
/// the man". Without such wider gaps a leading article stays a word ("a n
/// u d e" reads "a nude").
fn join_spaced(text: &str) -> String {
    // (word, separator after it)
    let mut parts: Vec<(String, String)> = Vec::new();
    let mut word = String::new();
    let mut sep = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            if !sep.is_empty() {
                parts.push((std::mem::take(&mut word), std::mem::take(&mut sep)));
            }
            word.push(c);
        } else {
            sep.push(c);
        }
    }
    parts.push((word, sep));
    // Where words are set two spaces apart, a run is one word even when it
    // starts with "a" or "i" ("a s i a n s"); where every gap is one space
    // a leading "a" or "i" is taken for the article or pronoun.
    let wide_gaps = text.contains("  ");
    let single = |w: &str| w.chars().count() == 1 && w.chars().all(char::is_alphabetic);
    let joins = |s: &str| matches!(s, " " | "." | "-" | "_" | "*" | "/");
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < parts.len() {
        // The run: single letters, each but the last followed by one
        // joining separator.
        let mut j = i;
        while j < parts.len() && single(&parts[j].0) {
            j += 1;
            if !joins(&parts[j - 1].1) {
                break;
            }
        }
        if j - i >= 3 {
            if !wide_gaps && j - i >= 4 && matches!(parts[i].0.as_str(), "a" | "i") {
                out.push_str(&parts[i].0);
                out.push(' ');
                i += 1;
            }
            for p in &parts[i..j] {
                out.push_str(&p.0);
            }
            out.push_str(&parts[j - 1].1);
            i = j;
        } else {
            out.push_str(&parts[i].0);
            out.push_str(&parts[i].1);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alike_letters_and_invisible_characters_fold_to_latin() {
        // Cyrillic а, е, о; Greek ο; a zero-width space; fullwidth and
        // mathematical letters; accents.
        assert_eq!(
            unevade("n\u{0430}k\u{0435}d w\u{043e}m\u{03bf}n"),
            "naked womon"
        );
        assert_eq!(unevade("k\u{200b}ill the m\u{200d}an"), "kill the man");
        assert_eq!(unevade("ｎｕｄｅ"), "nude");
        assert_eq!(unevade("𝐠𝐨𝐫𝐞"), "gore");
        assert_eq!(unevade("nüdé"), "nude");
    }

    #[test]
    fn leetspeak_inside_words_reads_as_letters() {
        assert_eq!(unevade("k1ll the n@k3d $lut"), "kill the naked slut");
        assert_eq!(unevade("bl00d everywhere!"), "blood everywhere");
        // Numbers and resolutions stay what they are.
        assert_eq!(
            unevade("1080p video, 24fps, 3 cats, 4k, 3d, h264, wow!"),
            "1080p video 24fps 3 cats 4k 3d h264 wow"
        );
        assert_eq!(unevade("h3ll0 k!ll 3mm4 nud3"), "hello kill emma nude");
    }

    #[test]
    fn spaced_letters_join() {
        assert_eq!(unevade("a n u d e woman"), "a nude woman");
        assert_eq!(unevade("k.i.l.l him"), "kill him");
        assert_eq!(unevade("s-h-o-o-t the crowd"), "shoot the crowd");
        // Two single letters are left alone; a wider gap ends a word.
        assert_eq!(unevade("a b test"), "a b test");
        assert_eq!(unevade("k i l l  t h e  m a n"), "kill the man");
        assert_eq!(unevade("a  a s i a n  w o m a n"), "a asian woman");
    }

    #[test]
    fn odd_input_found_by_the_fuzzer() {
        let s = "\u{202e}reverse\u{0b}\u{202c} z\u{335}a\u{336}l\u{fffd}\u{fffd}b\u{5}I\u{fffd}@\u{17}\u{fffd}\u{fffd}\"job_id\"\u{fffd}g\u{338}o";
        // decancer's bidirectional pass panics on it; without that pass
        // it cures it.
        assert!(decancer::cure(s, Options::default().disable_bidi()).is_ok());
        assert!(unevade(s).contains("reverse"));
    }

    #[test]
    fn plain_prompts_read_the_same() {
        for p in [
            "a red fox running through snow",
            "A chef slicing chicken breast, 4k, cinematic",
        ] {
            assert_eq!(unevade(p), normalise(p), "{p}");
        }
    }
}
