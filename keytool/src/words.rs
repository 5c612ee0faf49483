//! Pairing codes: `N-word-word`, e.g. `7-lantern-wagon`.
//!
//! A code carries about 22.6 bits (99 numbers x 256 x 256 words). That is
//! little, and on purpose easy to read aloud: SPAKE2 makes the code safe, as
//! an attacker gets exactly one online guess per invitation (a wrong code
//! burns it), so the chance of success is one in ~6.5 million.

use rand_core::RngCore;

/// The word list: 256 short, common, distinct English words.
pub const WORDS: [&str; 256] = [
    "acid", "acorn", "actor", "adult", "agent", "alarm", "album", "alley", "amber", "angle",
    "ankle", "apple", "april", "apron", "arena", "armor", "arrow", "atlas", "attic", "audio",
    "autumn", "award", "bacon", "badge", "bagel", "baker", "bamboo", "banjo", "barrel", "basil",
    "basin", "basket", "beach", "beard", "beaver", "bell", "bench", "berry", "bicycle", "bison",
    "blanket", "blossom", "border", "bottle", "bracket", "brave", "bread", "brick", "bridge",
    "broom", "bubble", "bucket", "buffalo", "button", "cabin", "cactus", "camel", "candle",
    "canoe", "canvas", "canyon", "carbon", "carpet", "carrot", "castle", "cedar", "cello",
    "cement", "cherry", "chess", "chimney", "circle", "citrus", "clay", "clock", "cloud", "clover",
    "cobalt", "cocoa", "comet", "copper", "coral", "cotton", "cousin", "cradle", "crayon",
    "cricket", "crystal", "cube", "cupboard", "curtain", "cushion", "dancer", "delta", "denim",
    "desert", "diamond", "dinner", "dolphin", "donkey", "dragon", "drum", "eagle", "earth", "echo",
    "elbow", "ember", "engine", "falcon", "feather", "ferry", "fiddle", "finch", "flute", "forest",
    "fossil", "fountain", "fox", "garden", "garlic", "gecko", "ginger", "glacier", "glider",
    "globe", "gravel", "guitar", "hammer", "harbor", "harvest", "hazel", "helmet", "hero",
    "hollow", "honey", "horizon", "igloo", "island", "ivory", "jacket", "jaguar", "jasmine",
    "jelly", "jigsaw", "jungle", "kayak", "kettle", "kitten", "koala", "ladder", "lagoon",
    "lantern", "laser", "lemon", "lentil", "lilac", "linen", "lizard", "lobster", "lotus",
    "magnet", "mango", "maple", "marble", "meadow", "melon", "mercury", "meteor", "mirror",
    "mitten", "monkey", "mosaic", "motor", "muffin", "mustard", "napkin", "nectar", "needle",
    "nickel", "noodle", "nutmeg", "oasis", "ocean", "olive", "onion", "orange", "orbit", "orchid",
    "otter", "oyster", "paddle", "palace", "panda", "parrot", "pebble", "pelican", "pencil",
    "pepper", "piano", "pickle", "pillow", "pilot", "pine", "planet", "plum", "pocket", "pony",
    "potato", "pretzel", "pumpkin", "puzzle", "quartz", "quilt", "rabbit", "radar", "radio",
    "raven", "ribbon", "river", "robin", "rocket", "saddle", "salmon", "sandal", "saturn", "scarf",
    "signal", "silver", "sketch", "sparrow", "spider", "spoon", "squirrel", "stable", "summer",
    "sunset", "tablet", "tango", "teapot", "temple", "thunder", "tiger", "timber", "toast",
    "tomato", "tractor", "trumpet", "tulip", "tunnel", "turtle", "umbrella", "valley", "velvet",
    "violin", "volcano", "wagon",
];

/// Highest slot number of a code.
pub const MAX_SLOT: u32 = 99;

/// A fresh random code from the OS RNG.
pub fn generate() -> String {
    let mut rng = rand_core::OsRng;
    // Rejection sampling for an unbiased slot in 1..=MAX_SLOT.
    let slot = loop {
        let v = rng.next_u32() & 0x7f;
        if (1..=MAX_SLOT).contains(&v) {
            break v;
        }
    };
    let w = rng.next_u32();
    format!(
        "{slot}-{}-{}",
        WORDS[(w & 0xff) as usize],
        WORDS[((w >> 8) & 0xff) as usize]
    )
}

/// Why a typed code is not a pairing code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    /// Not three parts.
    #[error("a pairing code looks like 7-lantern-wagon (a number and two words); got {0:?}")]
    Shape(String),
    /// The number is not 1..=99.
    #[error("the pairing code must start with a number from 1 to {MAX_SLOT}; got {0:?}")]
    Slot(String),
    /// A word is not in the list.
    #[error("{0:?} is not one of the pairing-code words; check the spelling")]
    Word(String),
}

/// Normalises a typed code (case, spaces and separators `-`, `_` or space)
/// to the canonical `N-word-word` form; refuses anything else.
pub fn normalize(input: &str) -> Result<String, CodeError> {
    let lowered = input.trim().to_ascii_lowercase();
    let parts: Vec<&str> = lowered
        .split(|c: char| c == '-' || c == '_' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .collect();
    let [slot, w1, w2] = parts.as_slice() else {
        return Err(CodeError::Shape(input.to_string()));
    };
    let n: u32 = slot
        .parse()
        .map_err(|_| CodeError::Slot(input.to_string()))?;
    if !(1..=MAX_SLOT).contains(&n) {
        return Err(CodeError::Slot(input.to_string()));
    }
    for w in [w1, w2] {
        if WORDS.binary_search(w).is_err() {
            return Err(CodeError::Word(w.to_string()));
        }
    }
    Ok(format!("{n}-{w1}-{w2}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_list_is_sorted_unique_and_simple() {
        for pair in WORDS.windows(2) {
            assert!(pair[0] < pair[1], "{} / {}", pair[0], pair[1]);
        }
        for w in WORDS {
            assert!(w.len() >= 3 && w.len() <= 8, "{w}");
            assert!(w.chars().all(|c| c.is_ascii_lowercase()), "{w}");
        }
    }

    #[test]
    fn generated_codes_normalize_to_themselves() {
        for _ in 0..200 {
            let code = generate();
            assert_eq!(normalize(&code).unwrap(), code);
            assert_eq!(
                normalize(&format!("  {} ", code.to_uppercase().replace('-', " "))).unwrap(),
                code
            );
        }
    }

    #[test]
    fn bad_codes_are_refused_with_their_reason() {
        assert!(matches!(
            normalize("lantern-wagon"),
            Err(CodeError::Shape(_))
        ));
        assert!(matches!(
            normalize("0-lantern-wagon"),
            Err(CodeError::Slot(_))
        ));
        assert!(matches!(
            normalize("100-lantern-wagon"),
            Err(CodeError::Slot(_))
        ));
        assert!(matches!(
            normalize("7-lantern-wagn"),
            Err(CodeError::Word(_))
        ));
        assert!(matches!(normalize(""), Err(CodeError::Shape(_))));
    }
}
