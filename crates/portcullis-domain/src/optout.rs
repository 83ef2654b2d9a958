//! Reading an inbound message for opt-out, opt-in and help keywords.
//!
//! [`classify`] turns the text of an inbound SMS into an [`Intent`]. The contract is API.md,
//! "Inbound and opt-out". Missing an opt-out is a compliance failure and can be a legal one.
//! Suppressing someone who meant "keep texting me" costs much less: essential messages still
//! reach them, and START lifts the suppression. So wherever a message is ambiguous, the rules
//! lean towards opting out or towards recording it for review. They never lean towards
//! ignoring it.
//!
//! # How a message is read
//!
//! 1. **Folding.** The text is put in Unicode compatibility decomposition (NFKD). This turns
//!    full-width `ＳＴＯＰ`, mathematical `𝐒𝐓𝐎𝐏`, circled `ⓢⓣⓞⓟ`, superscript `ˢᵗᵒᵖ` and
//!    ligatures into plain letters, and splits accented letters into a base letter plus
//!    combining marks. The marks are then dropped, so `ARRÊT` reads as `ARRET`. Dropped as
//!    well are default-ignorable characters: zero-width space, zero-width non-joiner and
//!    joiner, word joiner, BOM, soft hyphen, bidi controls, variation selectors, tag
//!    characters and Hangul fillers. Apostrophes are dropped too, so `don't`, `don’t` and
//!    `dont` are one word. Look-alike letters then fold to the Latin letter they pass for
//!    (see [the table](#look-alike-letters)), and everything is lower-cased.
//! 2. **Words.** A word is a run of letters and digits. Everything else separates words:
//!    spaces, punctuation, symbols and emoji. That is why `STOP!!!` and `stop 🙏` are the
//!    word `stop` plus nothing. Keywords match whole words only, so `STOPPED`,
//!    `unstoppable`, `Stopwatch`, `ending` and `quitting` never match.
//! 3. **Letter spacing.** Two or more single letters in a row, whatever separates them,
//!    join into one word: `S T O P`, `S.T.O.P` and `s-t-o-p` are all `stop`.
//! 4. **Hyphenated compounds.** Two words joined by exactly one hyphen are one word:
//!    `non-stop` is `nonstop`, which is not a keyword (so the result is `None`), and
//!    `opt-out` is `optout`, which is the keyword OPTOUT.
//! 5. **Elongation.** A word holding three or more of the same letter in a row also matches
//!    its squeezed form: `STOPPPP`, `stooop`, `yesss` and `pleeease` count. A doubled letter
//!    is not enough (`stopp` does not match), because ordinary words are full of those.
//!
//! Then, in this order of precedence:
//!
//! 1. **Whole-message keyword.** The message holds nothing but keywords and
//!    [filler](FILLER), with at least one keyword. If any of those keywords is an opt-out
//!    keyword the result is [`Intent::OptOut`], otherwise [`Intent::OptIn`] if any is an
//!    opt-in keyword, otherwise [`Intent::Help`]. The reported keyword is the first one of
//!    the winning kind in the message. This covers `STOP`, `Stop please`, `unsubscribe me`,
//!    `stop 🙏` and `YES!`.
//! 2. **Opt-out phrase anywhere.** The message contains one of [`OPT_OUT_PHRASES`] as
//!    consecutive words, and the phrase is not negated (see below). Result:
//!    [`Intent::OptOut`] with the phrase as the keyword.
//! 3. **Negated phrase.** The only phrases found are negated, as in "please don't stop texting
//!    me". Result: [`Intent::PossibleOptOut`] with the phrase.
//! 4. **Keyword somewhere.** An opt-out keyword stands as a whole word somewhere in a longer
//!    message, as in "where is the bus stop?" or "don't stop". Result:
//!    [`Intent::PossibleOptOut`] with the keyword.
//! 5. Anything else is [`Intent::None`].
//!
//! # Documented decisions
//!
//! - **Filler may come before the keyword too.** "Please stop", "ok STOP" and "thanks, stop"
//!   opt out. API.md names only the keyword-then-filler case, but the intent here is just as
//!   clear.
//! - **Several keywords in one message**, such as "STOP STOP" or "stop cancel", opt out.
//!   Mixed kinds such as "STOP START" or "yes stop" follow the precedence above, so the
//!   opt-out wins.
//! - **Opt-in and help keywords count only as the whole message.** When one of them appears
//!   inside a longer sentence ("yes I'll be there", "I need help", "start over") the result
//!   is `None`. YES in particular is far too common in ordinary replies to mean anything
//!   there, and such messages are never recorded for review, unlike opt-out keywords.
//! - **Filler** is [`FILLER`]: a short English list, plus the French and Spanish
//!   courtesies `svp`, `s'il vous plaît`, `merci`, `por favor` and `gracias`. They are there
//!   because ARRÊT and BAJA are default keywords. Punctuation, symbols and emoji count as
//!   filler because they never form words.
//! - **Negation.** A phrase counts as negated when one of [`NEGATIONS`] comes directly before
//!   it. Only a few intensifiers may stand in between ("please", "just", "ever", "really",
//!   "ok"), and there must be no sentence break (`. , ! ? ; :`, a dash or a line break). So
//!   "don't stop texting me" and "please never stop messaging me" are `PossibleOptOut`, but
//!   "Don't. Stop texting me." opts out. The window is kept narrow on purpose. "Why won't you
//!   stop texting me" is a complaint, not a wish to keep receiving messages, and it opts out.
//!   The cost is that "I don't want you to stop texting me" opts out as well. That is the
//!   cheaper mistake. `no` is not a negation, because "no, stop texting me" is an opt-out.
//!   A negated keyword outside a phrase ("don't stop") is never a whole-message match,
//!   because the negation is not filler, so it falls through to `PossibleOptOut`.
//! - **A keyword that is a sentence on its own is still only a keyword in a longer
//!   message.** "STOP!!! I never signed up" is `PossibleOptOut`, as the contract says.
//!   Reading it as an opt-out would also catch "Cancel. I'll call to reschedule".
//! - **Phrases match across punctuation.** Only a sentence break between a negation and a
//!   phrase matters. Inside a phrase, words simply have to be consecutive.
//! - **Reported keyword.** For keywords this is the configured spelling, upper-cased. Keywords
//!   that fold to the same words, such as ARRET and ARRÊT, report the first one listed
//!   (`ARRET`). For phrases it is the phrase as written in [`OPT_OUT_PHRASES`]. When more than
//!   one phrase matches, the earlier one in the list wins, which is why longer, more specific
//!   phrases come first.
//! - **Per-app extras** are opt-out keywords exactly like the defaults. They may be several
//!   words long and are folded the same way as messages, so an extra written in Cyrillic
//!   (`СТОП`) still matches. An extra that collides with an opt-in, help or filler word wins
//!   by precedence. Extras that fold to nothing (blank or punctuation only) are ignored.
//! - **The digit zero also reads as the letter O**, so `ST0P` and `0PT0UT` match. Other
//!   digits are not read as letters: "leet" spellings beyond that are not worth the false
//!   positives.
//! - **Not covered:** keywords split into several parts of more than one letter (`ST OP`);
//!   whole sentences spelled out letter by letter (`s t o p t e x t i n g m e` is one word);
//!   look-alikes from scripts other than those in the table (Cherokee, Armenian, …);
//!   regional-indicator "letters" (🇸🇹, which are flag emoji); and translations of phrases.
//!   Apps can add words in other languages as extras.
//!
//! # Look-alike letters
//!
//! Each character folds to the Latin letter it can pass for when it is seen, not to a
//! transliteration. That is why Cyrillic `п` folds to `n` and `г` to `r`. Both letters of a
//! case pair always fold alike, so an app's extra keyword matches whatever case it is typed
//! in. Small letters that look like Latin small capitals (Cyrillic `т`, `н`, `к`, `м`, `в`)
//! fold like their capitals anyway.
//!
//! Some letters pass for two different Latin letters, and a word containing one of them is
//! tried both ways. A word gets at most 16 readings, so hostile input stays cheap. Cyrillic
//! `С`/`с` and Greek lunate sigma `Ϲ`/`ϲ` look like C but are S-letters, so Cyrillic `СТОР`
//! and `САNCEL` both match. Greek `Η`/`η` reads as H or n, `Μ`/`μ` as M or u, `Ν`/`ν` as N
//! or v, and `Υ`/`υ` as Y or u. The palochka `Ӏ`/`ӏ` reads as I or l.
//!
//! The table covers Cyrillic, Greek, Latin small capitals, the dotless i and j, and the
//! squared letters (`🅂🅃🄾🄿`, `🆂🆃🅾🅿`). Full-width, mathematical, circled and
//! superscript forms are handled by NFKD.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// What an inbound message means for the sender's subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Opt out (suppress). `keyword` is the canonical keyword or phrase matched, e.g. "STOP" or
    /// "stop texting me".
    OptOut {
        /// The configured keyword (upper-cased) or the phrase from [`OPT_OUT_PHRASES`].
        keyword: String,
    },
    /// Opt back in (START, UNSTOP, YES).
    OptIn {
        /// The configured keyword, upper-cased.
        keyword: String,
    },
    /// HELP / INFO: answer with the app's help text.
    Help {
        /// The configured keyword, upper-cased.
        keyword: String,
    },
    /// A keyword stands somewhere in a longer message ("where is the bus stop?"): not an
    /// opt-out, but recorded for review.
    PossibleOptOut {
        /// The opt-out keyword found, or the negated phrase.
        keyword: String,
    },
    /// Nothing.
    None,
}

/// Default opt-out keywords (API.md). `OPT OUT` is two words; `ARRET` and `ARRÊT` fold to
/// the same word and both are listed only because the contract lists both.
pub const DEFAULT_OPT_OUT: &[&str] = &[
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
    "OPT OUT",
    "ARRET",
    "ARRÊT",
    "BAJA",
];

/// Keywords that lift a suppression (API.md).
pub const DEFAULT_OPT_IN: &[&str] = &["START", "UNSTOP", "YES"];

/// Keywords answered with the app's help text (API.md).
pub const DEFAULT_HELP: &[&str] = &["HELP", "INFO"];

/// Phrases that opt out wherever they stand in a message, unless negated.
///
/// They are matched as consecutive words after folding, so case, punctuation, apostrophes
/// (`don't` = `dont`) and look-alike letters do not matter. When several match, the first in
/// this list is reported, so the longer and more specific phrases come first. The list
/// contains the phrases from the contract plus their obvious variants ("this list", "the
/// list", "do not text me", …).
pub const OPT_OUT_PHRASES: &[&str] = &[
    "stop texting me",
    "stop messaging me",
    "stop sending me messages",
    "stop sending me texts",
    "stop sending messages",
    "stop sending texts",
    "stop contacting me",
    "stop texting",
    "stop messaging",
    "opt me out",
    "remove me from your list",
    "remove me from this list",
    "remove me from the list",
    "take me off your list",
    "take me off this list",
    "take me off the list",
    "don't text me",
    "do not text me",
    "don't message me",
    "do not message me",
    "don't contact me",
    "do not contact me",
    "unsubscribe me",
];

/// Words that may surround a keyword without making the message "longer": "STOP please",
/// "please stop", "stop it now". Punctuation and emoji never form words, so they need no
/// listing. The French and Spanish courtesies are there because ARRÊT and BAJA are default
/// keywords.
pub const FILLER: &[&str] = &[
    "please",
    "pls",
    "plz",
    "me",
    "now",
    "thanks",
    "thank you",
    "thx",
    "it",
    "all",
    "already",
    "asap",
    "right now",
    "immediately",
    "ok",
    "okay",
    "svp",
    "s'il vous plaît",
    "merci",
    "por favor",
    "gracias",
];

/// Words that negate an opt-out phrase directly after them ("don't stop texting me").
/// Apostrophes are dropped before matching, so `dont` and `don’t` are covered too. `no` is
/// deliberately absent: "no, stop texting me" is an opt-out.
pub const NEGATIONS: &[&str] = &[
    "not",
    "never",
    "don't",
    "doesn't",
    "didn't",
    "won't",
    "can't",
    "cannot",
    "shouldn't",
    "wouldn't",
];

/// Intensifiers that may stand between a negation and the phrase it negates ("don't ever
/// stop texting me"). The list is kept short, for the reason given in the module docs.
const NEGATION_SKIP: &[&str] = &[
    "please", "pls", "plz", "just", "ever", "really", "ok", "okay",
];

/// The maximum number of readings tried for one word that contains ambiguous look-alikes
/// (`С` = C or S, `0` = 0 or O). This bounds the work for hostile input such as a long
/// run of zeros.
const MAX_FORMS: usize = 16;

/// The keyword sets one app's inbound messages are read against.
///
/// Start from [`Keywords::defaults`]; add the app's own opt-out words with
/// [`Keywords::with_extra_opt_out`].
#[derive(Debug, Clone)]
pub struct Keywords {
    opt_out: Vec<Entry>,
    opt_in: Vec<Entry>,
    help: Vec<Entry>,
    phrases: Vec<Entry>,
    filler: Vec<Entry>,
    negations: Vec<Entry>,
    negation_skip: Vec<Entry>,
}

impl Keywords {
    /// The defaults from API.md: the opt-out keywords [`DEFAULT_OPT_OUT`] (STOP, STOPALL,
    /// UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT, OPT OUT, ARRET, ARRÊT, BAJA), the
    /// opt-in keywords [`DEFAULT_OPT_IN`] (START, UNSTOP, YES) and the help keywords
    /// [`DEFAULT_HELP`] (HELP, INFO).
    pub fn defaults() -> Keywords {
        Keywords {
            opt_out: entries(DEFAULT_OPT_OUT),
            opt_in: entries(DEFAULT_OPT_IN),
            help: entries(DEFAULT_HELP),
            phrases: entries(OPT_OUT_PHRASES),
            filler: entries(FILLER),
            negations: entries(NEGATIONS),
            negation_skip: entries(NEGATION_SKIP),
        }
    }

    /// Adds an app's own opt-out keywords, which may be several words long. They are matched
    /// exactly like the defaults and take precedence over opt-in, help and filler words.
    /// Blank extras, and extras that are only punctuation, are ignored.
    pub fn with_extra_opt_out(mut self, words: &[String]) -> Keywords {
        for word in words {
            // Reported upper-cased, with whitespace collapsed, like the defaults.
            let display = word
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_uppercase();
            if let Some(entry) = Entry::new(display) {
                self.opt_out.push(entry);
            }
        }
        self
    }
}

impl Default for Keywords {
    fn default() -> Self {
        Keywords::defaults()
    }
}

/// Reads an inbound message. Pure and total: any text, however hostile, gets an answer. The
/// work is linear in the length of the text, multiplied by the number of keywords.
pub fn classify(text: &str, keywords: &Keywords) -> Intent {
    let words = tokenize(text);
    if words.is_empty() {
        return Intent::None;
    }

    // 1. Nothing but keywords and filler: opt-out > opt-in > help.
    if let Some(intent) = whole_message(&words, keywords) {
        return intent;
    }

    // 2. and 3. Opt-out phrases anywhere: any phrase that is not negated opts out. If every
    //    phrase found is negated, the message is only worth a review.
    let mut negated: Option<&Entry> = None;
    for phrase in &keywords.phrases {
        for start in 0..words.len() {
            if phrase.matches_at(&words, start) {
                if !is_negated(&words, start, keywords) {
                    return Intent::OptOut {
                        keyword: phrase.display.clone(),
                    };
                }
                negated.get_or_insert(phrase);
            }
        }
    }
    if let Some(phrase) = negated {
        return Intent::PossibleOptOut {
            keyword: phrase.display.clone(),
        };
    }

    // 4. An opt-out keyword standing somewhere in a longer message: the earliest one found.
    for start in 0..words.len() {
        if let Some(entry) = keywords
            .opt_out
            .iter()
            .find(|e| e.matches_at(&words, start))
        {
            return Intent::PossibleOptOut {
                keyword: entry.display.clone(),
            };
        }
    }

    Intent::None
}

/// Step 1. Reads the message as a sequence of keywords and filler. At each position it takes
/// the longest unit that matches, and on a tie the earlier list wins (opt-out first). It
/// returns `None` as soon as some word is neither a keyword nor filler, and also when the
/// message is filler only.
fn whole_message(words: &[Word], keywords: &Keywords) -> Option<Intent> {
    #[derive(Clone, Copy)]
    enum Kind {
        OptOut,
        OptIn,
        Help,
        Filler,
    }
    let lists = [
        (Kind::OptOut, &keywords.opt_out),
        (Kind::OptIn, &keywords.opt_in),
        (Kind::Help, &keywords.help),
        (Kind::Filler, &keywords.filler),
    ];

    let (mut opt_out, mut opt_in, mut help) = (None, None, None);
    let mut at = 0;
    while at < words.len() {
        let mut best: Option<(Kind, &Entry)> = None;
        for (kind, list) in lists {
            for entry in list.iter() {
                let longer = best.is_none_or(|(_, b)| entry.words.len() > b.words.len());
                if longer && entry.matches_at(words, at) {
                    best = Some((kind, entry));
                }
            }
        }
        let (kind, entry) = best?;
        match kind {
            Kind::OptOut => {
                opt_out.get_or_insert(entry);
            }
            Kind::OptIn => {
                opt_in.get_or_insert(entry);
            }
            Kind::Help => {
                help.get_or_insert(entry);
            }
            Kind::Filler => {}
        }
        // Entries are never empty (`Entry::new`), so this always advances.
        at += entry.words.len();
    }

    let keyword = |e: &Entry| e.display.clone();
    if let Some(e) = opt_out {
        Some(Intent::OptOut {
            keyword: keyword(e),
        })
    } else if let Some(e) = opt_in {
        Some(Intent::OptIn {
            keyword: keyword(e),
        })
    } else {
        help.map(|e| Intent::Help {
            keyword: keyword(e),
        })
    }
}

/// Whether a negation stands directly before `words[start]`. Only [`NEGATION_SKIP`] words
/// may come in between, and no sentence break.
fn is_negated(words: &[Word], start: usize, keywords: &Keywords) -> bool {
    let mut at = start;
    while at > 0 {
        if words[at].break_before {
            return false;
        }
        let previous = &words[at - 1];
        if keywords.negations.iter().any(|n| n.is_single(previous)) {
            return true;
        }
        if !keywords.negation_skip.iter().any(|s| s.is_single(previous)) {
            return false;
        }
        at -= 1;
    }
    false
}

/// A keyword, phrase or filler, with its folded words.
#[derive(Debug, Clone)]
struct Entry {
    /// What [`Intent`] reports.
    display: String,
    /// Never empty.
    words: Vec<Word>,
}

impl Entry {
    /// `None` when the text folds to no words at all.
    fn new(display: String) -> Option<Entry> {
        let words = tokenize(&display);
        (!words.is_empty()).then_some(Entry { display, words })
    }

    fn matches_at(&self, words: &[Word], start: usize) -> bool {
        words
            .get(start..start + self.words.len())
            .is_some_and(|window| window.iter().zip(&self.words).all(|(w, k)| w.same(k)))
    }

    fn is_single(&self, word: &Word) -> bool {
        self.words.len() == 1 && self.words[0].same(word)
    }
}

fn entries(list: &[&str]) -> Vec<Entry> {
    list.iter()
        .filter_map(|s| Entry::new((*s).to_owned()))
        .collect()
}

/// One folded word of a message or keyword.
#[derive(Debug, Clone)]
struct Word {
    /// Every reading of the word. There is more than one only when it contains an ambiguous
    /// look-alike. Never empty, and at most [`MAX_FORMS`].
    forms: Vec<Form>,
    /// Whether a sentence break (`. , ! ? ; :`, a dash or a line break) comes before it. Only
    /// negation looks at this.
    break_before: bool,
}

impl Word {
    /// Two words are the same when any reading of one equals any reading of the other,
    /// either exactly or, if one of them is elongated, once repeated letters are squeezed.
    fn same(&self, other: &Word) -> bool {
        self.forms.iter().any(|a| {
            other.forms.iter().any(|b| {
                a.text == b.text || ((a.elongated || b.elongated) && a.squeezed == b.squeezed)
            })
        })
    }
}

#[derive(Debug, Clone)]
struct Form {
    text: String,
    /// `text` with every run of one repeated character cut down to one character.
    squeezed: String,
    /// Whether `text` holds a run of three or more of one character ("stooop").
    elongated: bool,
}

impl Form {
    fn new(text: String) -> Form {
        let mut squeezed = String::with_capacity(text.len());
        let (mut previous, mut run, mut elongated) = (None, 0, false);
        for c in text.chars() {
            if previous == Some(c) {
                run += 1;
                elongated |= run >= 3;
            } else {
                squeezed.push(c);
                previous = Some(c);
                run = 1;
            }
        }
        Form {
            text,
            squeezed,
            elongated,
        }
    }
}

/// A folded character. `alt` is a second reading for ambiguous look-alikes (`С` = c or s).
#[derive(Debug, Clone, Copy)]
struct Glyph {
    main: char,
    alt: Option<char>,
}

impl Glyph {
    fn is_word_char(self) -> bool {
        self.main.is_alphanumeric() || self.alt.is_some_and(char::is_alphanumeric)
    }

    fn is_letter(self) -> bool {
        self.main.is_alphabetic() || self.alt.is_some_and(char::is_alphabetic)
    }
}

/// A run of word characters, before letter-spacing and hyphen joins.
struct Piece {
    glyphs: Vec<Glyph>,
    /// Exactly one hyphen separates it from the previous piece ("non-stop").
    after_hyphen: bool,
    /// A sentence break separates it from the previous piece.
    break_before: bool,
}

impl Piece {
    fn is_single_letter(&self) -> bool {
        self.glyphs.len() == 1 && self.glyphs[0].is_letter()
    }
}

/// The separator characters between two pieces.
#[derive(Default)]
struct Gap {
    chars: usize,
    hyphens: usize,
    has_break: bool,
}

/// Folds text and splits it into words (see the module docs for the steps).
fn tokenize(text: &str) -> Vec<Word> {
    let mut pieces: Vec<Piece> = Vec::new();
    let mut current: Option<Piece> = None;
    let mut gap = Gap::default();

    // Apostrophes and invisibles go before NFKD. NFKD would turn U+00B4 (´, used as an
    // apostrophe) into a space plus a mark, and Hangul fillers into other fillers.
    let chars = text
        .chars()
        .filter(|&c| !is_apostrophe(c) && !is_invisible(c))
        .nfkd();
    for c in chars {
        if is_combining_mark(c) || is_invisible(c) {
            continue;
        }
        let glyph = fold(c);
        if glyph.is_word_char() {
            current
                .get_or_insert_with(|| Piece {
                    glyphs: Vec::new(),
                    after_hyphen: gap.chars == 1 && gap.hyphens == 1,
                    break_before: gap.has_break,
                })
                .glyphs
                .push(glyph);
        } else {
            if let Some(piece) = current.take() {
                pieces.push(piece);
                gap = Gap::default();
            }
            gap.chars += 1;
            gap.hyphens += usize::from(is_hyphen(glyph.main));
            gap.has_break |= is_break(glyph.main);
        }
    }
    pieces.extend(current);

    let pieces = join_hyphenated(join_spaced_letters(pieces));
    pieces
        .into_iter()
        .map(|p| Word {
            forms: expand(&p.glyphs).into_iter().map(Form::new).collect(),
            break_before: p.break_before,
        })
        .collect()
}

/// `S T O P`, `S.T.O.P`, `s-t-o-p`: consecutive single letters become one word. A lone
/// single letter ("I", "a") stays as it is.
fn join_spaced_letters(pieces: Vec<Piece>) -> Vec<Piece> {
    let mut out = Vec::with_capacity(pieces.len());
    let mut pieces = pieces.into_iter().peekable();
    while let Some(mut piece) = pieces.next() {
        if piece.is_single_letter() {
            while let Some(next) = pieces.next_if(Piece::is_single_letter) {
                piece.glyphs.extend(next.glyphs);
            }
        }
        out.push(piece);
    }
    out
}

/// `non-stop`, `opt-out`: a single hyphen between two words makes one compound word. That
/// way the keyword inside a compound is "inside another word", and `opt-out` is OPTOUT.
fn join_hyphenated(pieces: Vec<Piece>) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::with_capacity(pieces.len());
    for piece in pieces {
        match out.last_mut() {
            Some(previous) if piece.after_hyphen => previous.glyphs.extend(piece.glyphs),
            _ => out.push(piece),
        }
    }
    out
}

/// Every reading of a word, up to [`MAX_FORMS`]. Once that limit is reached, later ambiguous
/// glyphs are read only as their main letter.
fn expand(glyphs: &[Glyph]) -> Vec<String> {
    let mut forms = vec![String::with_capacity(glyphs.len())];
    for glyph in glyphs {
        match glyph.alt {
            Some(alt) if forms.len() * 2 <= MAX_FORMS => {
                let mut alternatives = forms.clone();
                for form in &mut forms {
                    form.push(glyph.main);
                }
                for form in &mut alternatives {
                    form.push(alt);
                }
                forms.append(&mut alternatives);
            }
            _ => {
                for form in &mut forms {
                    form.push(glyph.main);
                }
            }
        }
    }
    forms
}

/// Folds one character (already NFKD, without marks) to lower case, mapping look-alikes to
/// the Latin letter they pass for.
///
/// The character is lower-cased *before* the table is consulted, so both letters of a case
/// pair always fold alike. Otherwise an app's extra keyword written in capitals would fold
/// differently from the same word typed in small letters. Where the capital and the small
/// letter pass for different Latin letters (Greek Η looks like H, η like n), the entry gives
/// both readings.
fn fold(c: char) -> Glyph {
    let one = |main| Glyph { main, alt: None };
    let two = |main, alt| Glyph {
        main,
        alt: Some(alt),
    };
    if c.is_ascii() {
        return match c {
            '0' => two('0', 'o'), // ST0P
            _ => one(c.to_ascii_lowercase()),
        };
    }
    let c = c.to_lowercase().next().unwrap_or(c);
    match c {
        // Cyrillic, small letters (capitals were lower-cased above). Escapes rather than
        // literals, because the literals would look exactly like the Latin letters they are
        // mistaken for. Each comment shows the capital and the small letter.
        '\u{0430}' => one('a'),      // А а
        '\u{0432}' => one('b'),      // В в (в is a small-capital B)
        '\u{044C}' => one('b'),      // Ь ь
        '\u{0441}' => two('c', 's'), // С с: looks like C, is the letter Es
        '\u{0501}' => one('d'),      // Ԁ ԁ
        '\u{0435}' => one('e'),      // Е е (Ё ё arrive as Е е plus a mark)
        '\u{04BB}' => one('h'),      // Һ һ
        '\u{043D}' => one('h'),      // Н н (н is a small-capital H)
        '\u{0456}' => one('i'),      // І і (Ї ї arrive as І і plus a mark)
        '\u{04CF}' => two('i', 'l'), // Ӏ ӏ palochka: an I or an l
        '\u{0458}' => one('j'),      // Ј ј
        '\u{043A}' => one('k'),      // К к
        '\u{043C}' => one('m'),      // М м
        '\u{043E}' => one('o'),      // О о
        '\u{0440}' => one('p'),      // Р р
        '\u{051B}' => one('q'),      // Ԛ ԛ
        '\u{0455}' => one('s'),      // Ѕ ѕ
        '\u{0442}' => one('t'),      // Т т
        '\u{0475}' => one('v'),      // Ѵ ѵ
        '\u{051D}' => one('w'),      // Ԝ ԝ
        '\u{0445}' => one('x'),      // Х х
        '\u{0443}' => one('y'),      // У у
        '\u{04AF}' => one('y'),      // Ү ү
        '\u{043F}' => one('n'),      // П п (п looks like n)
        '\u{0433}' => one('r'),      // Г г (г looks like r)
        // Greek, small letters (accented forms arrive unaccented after NFKD).
        '\u{03B1}' => one('a'),                   // Α α
        '\u{03B2}' => one('b'),                   // Β β
        '\u{03B5}' => one('e'),                   // Ε ε
        '\u{03B6}' => one('z'),                   // Ζ ζ
        '\u{03B7}' => two('h', 'n'),              // Η η
        '\u{03B9}' => one('i'),                   // Ι ι
        '\u{03BA}' => one('k'),                   // Κ κ
        '\u{03BC}' => two('m', 'u'),              // Μ μ
        '\u{03BD}' => two('n', 'v'),              // Ν ν
        '\u{03BF}' => one('o'),                   // Ο ο
        '\u{03C1}' => one('p'),                   // Ρ ρ
        '\u{03C4}' => one('t'),                   // Τ τ
        '\u{03C5}' | '\u{03D2}' => two('y', 'u'), // Υ υ, ϒ
        '\u{03C7}' => one('x'),                   // Χ χ
        '\u{03B3}' => one('y'),                   // Γ γ (γ looks like y)
        '\u{03F2}' => two('c', 's'),              // Ϲ ϲ lunate sigma: looks like C, is an S
        '\u{03F3}' => one('j'),                   // Ϳ ϳ
        // Final sigma is a small sigma in another shape: it must fold like Σ, which lower-cases
        // to σ, or a Greek extra in capitals would miss the same word typed in small letters.
        '\u{03C2}' => one('\u{03C3}'), // ς
        // Latin small capitals and other Latin look-alikes ("ꜱᴛᴏᴘ" from font generators).
        '\u{1D00}' | '\u{0251}' => one('a'),              // ᴀ ɑ
        '\u{0299}' => one('b'),                           // ʙ
        '\u{1D04}' => one('c'),                           // ᴄ
        '\u{1D05}' => one('d'),                           // ᴅ
        '\u{1D07}' => one('e'),                           // ᴇ
        '\u{A730}' => one('f'),                           // ꜰ
        '\u{0262}' | '\u{0261}' => one('g'),              // ɢ ɡ
        '\u{029C}' => one('h'),                           // ʜ
        '\u{026A}' | '\u{0131}' | '\u{0269}' => one('i'), // ɪ ı ɩ
        '\u{1D0A}' | '\u{0237}' => one('j'),              // ᴊ ȷ
        '\u{1D0B}' => one('k'),                           // ᴋ
        '\u{029F}' => one('l'),                           // ʟ
        '\u{1D0D}' => one('m'),                           // ᴍ
        '\u{0274}' => one('n'),                           // ɴ
        '\u{1D0F}' => one('o'),                           // ᴏ
        '\u{1D18}' => one('p'),                           // ᴘ
        '\u{0280}' => one('r'),                           // ʀ
        '\u{A731}' => one('s'),                           // ꜱ
        '\u{1D1B}' => one('t'),                           // ᴛ
        '\u{1D1C}' => one('u'),                           // ᴜ
        '\u{1D20}' => one('v'),                           // ᴠ
        '\u{1D21}' => one('w'),                           // ᴡ
        '\u{028F}' => one('y'),                           // ʏ
        '\u{1D22}' => one('z'),                           // ᴢ
        // Squared and negative circled/squared capitals (🅂🅃🄾🄿) have no NFKD mapping.
        '\u{1F130}'..='\u{1F149}' => one(nth_letter(c, 0x1F130)),
        '\u{1F150}'..='\u{1F169}' => one(nth_letter(c, 0x1F150)),
        '\u{1F170}'..='\u{1F189}' => one(nth_letter(c, 0x1F170)),
        _ => one(c),
    }
}

/// The letter at `c`'s offset from `first` (the code point standing for `a`).
fn nth_letter(c: char, first: u32) -> char {
    let offset = u32::from(c) - first;
    // The callers' ranges are 26 wide, so the offset always fits.
    char::from_u32(u32::from('a') + offset).unwrap_or(c)
}

/// Apostrophes and the characters typed in their place. Dropped, so that `don't` = `dont`.
fn is_apostrophe(c: char) -> bool {
    matches!(
        c,
        '\'' | '`'
            | '\u{00B4}' // acute accent
            | '\u{02B9}' // modifier letter prime
            | '\u{02BC}' // modifier letter apostrophe (a letter: it must not join words)
            | '\u{2018}' // left single quotation mark
            | '\u{2019}' // right single quotation mark
            | '\u{201B}' // single high-reversed-9 quotation mark
            | '\u{2032}' // prime
            | '\u{FF07}' // full-width apostrophe
    )
}

/// Default-ignorable characters. They print nothing, so someone can put them inside a word
/// (`ST\u{200B}OP`) without it looking any different.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' // soft hyphen
            | '\u{034F}' // combining grapheme joiner
            | '\u{061C}' // Arabic letter mark
            | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' // Hangul fillers (letters!)
            | '\u{17B4}' | '\u{17B5}' // Khmer inherent vowels
            | '\u{180B}'..='\u{180F}' // Mongolian variation selectors, vowel separator
            | '\u{200B}'..='\u{200F}' // zero-width space, non-joiner, joiner; LRM, RLM
            | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
            | '\u{2060}'..='\u{206F}' // word joiner, invisible operators, bidi isolates
            | '\u{FE00}'..='\u{FE0F}' // variation selectors
            | '\u{FEFF}' // zero-width no-break space / BOM
            | '\u{1BCA0}'..='\u{1BCA3}' // shorthand format controls
            | '\u{1D173}'..='\u{1D17A}' // musical formatting controls
            | '\u{E0000}'..='\u{E0FFF}' // tag characters, variation selectors supplement
    )
}

/// Hyphens that join compounds (`non-stop`). Dashes do not: they separate clauses.
fn is_hyphen(c: char) -> bool {
    matches!(
        c,
        '-' | '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2212}' | '\u{FE63}'
    )
}

/// Separators that end a clause. A negation does not reach across them.
fn is_break(c: char) -> bool {
    matches!(
        c,
        '.' | ','
            | '!'
            | '?'
            | ';'
            | ':'
            | '|'
            | '\n'
            | '\r'
            | '\u{00A1}' // ¡
            | '\u{00BF}' // ¿
            | '\u{2013}' // en dash
            | '\u{2014}' // em dash
            | '\u{2028}' // line separator
            | '\u{2029}' // paragraph separator
            | '\u{3001}' // ideographic comma
            | '\u{3002}' // ideographic full stop
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(k: &str) -> Intent {
        Intent::OptOut { keyword: k.into() }
    }
    fn opt_in(k: &str) -> Intent {
        Intent::OptIn { keyword: k.into() }
    }
    fn help(k: &str) -> Intent {
        Intent::Help { keyword: k.into() }
    }
    fn maybe(k: &str) -> Intent {
        Intent::PossibleOptOut { keyword: k.into() }
    }
    const NONE: Intent = Intent::None;

    /// Runs a table and reports every failing row at once, not only the first.
    fn check(keywords: &Keywords, cases: &[(&str, Intent)]) {
        let failures: Vec<String> = cases
            .iter()
            .filter_map(|(text, want)| {
                let got = classify(text, keywords);
                (got != *want).then(|| {
                    format!(
                        "{text:?} ({:?}): want {want:?}, got {got:?}",
                        text.escape_unicode().to_string()
                    )
                })
            })
            .collect();
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn optout_default_table() {
        let cases = [
            // The keywords themselves, in any case.
            ("STOP", out("STOP")),
            ("stop", out("STOP")),
            ("Stop", out("STOP")),
            ("sToP", out("STOP")),
            ("STOPALL", out("STOPALL")),
            ("Unsubscribe", out("UNSUBSCRIBE")),
            ("cancel", out("CANCEL")),
            ("END", out("END")),
            ("quit", out("QUIT")),
            ("Revoke", out("REVOKE")),
            ("OPTOUT", out("OPTOUT")),
            ("opt out", out("OPT OUT")),
            ("Opt-Out", out("OPTOUT")),
            // Surrounding whitespace and punctuation.
            ("  STOP  ", out("STOP")),
            ("\tstop\r\n", out("STOP")),
            ("STOP!!!", out("STOP")),
            ("stop.", out("STOP")),
            ("\"STOP\"", out("STOP")),
            ("'stop'", out("STOP")),
            ("...stop?!", out("STOP")),
            ("(stop)", out("STOP")),
            // Filler, after and before.
            ("Stop please", out("STOP")),
            ("STOP thanks", out("STOP")),
            ("stop thank you!", out("STOP")),
            ("unsubscribe me", out("UNSUBSCRIBE")),
            ("stop it", out("STOP")),
            ("stop now", out("STOP")),
            ("Stop it right now!!", out("STOP")),
            ("cancel pls", out("CANCEL")),
            ("stop all", out("STOP")),
            ("STOP ALREADY", out("STOP")),
            ("stop asap", out("STOP")),
            ("stop immediately", out("STOP")),
            ("ok stop", out("STOP")),
            ("Please stop.", out("STOP")),
            ("stop 🙏", out("STOP")),
            ("🛑 STOP 🛑", out("STOP")),
            ("STOP STOP STOP", out("STOP")),
            ("stop, cancel, unsubscribe", out("STOP")),
            // Elongation.
            ("STOPPPP", out("STOP")),
            ("stooooop pleeease", out("STOP")),
            // Zero-width and other invisible characters inside the word.
            ("ST\u{200B}OP", out("STOP")),
            ("S\u{200C}T\u{200D}O\u{2060}P", out("STOP")),
            ("\u{FEFF}STOP", out("STOP")),
            ("STO\u{00AD}P", out("STOP")),
            ("st\u{E0020}op", out("STOP")),
            ("S\u{3164}TOP", out("STOP")),
            // Letter spacing.
            ("S T O P", out("STOP")),
            ("S.T.O.P", out("STOP")),
            ("S.T.O.P.", out("STOP")),
            ("s-t-o-p", out("STOP")),
            ("s _ t _ o _ p please", out("STOP")),
            ("Q U I T", out("QUIT")),
            // Cyrillic and Greek look-alikes, written as escapes so they are visible.
            ("\u{0405}\u{0422}\u{041E}\u{0420}", out("STOP")), // Ѕ Т О Р
            ("\u{0421}\u{0422}\u{041E}\u{0420}", out("STOP")), // С Т О Р (С is Es)
            ("\u{0455}\u{0442}\u{043E}\u{0440}", out("STOP")), // ѕ т о р
            ("S\u{0422}OP", out("STOP")),                      // one Cyrillic Т
            ("ST\u{039F}\u{03A1}", out("STOP")),               // Greek Ο Ρ
            ("\u{0421}\u{0410}N\u{0421}\u{0415}L", out("CANCEL")), // С А N С Е L
            ("\u{0415}\u{039D}D", out("END")),                 // Cyrillic Е, Greek Ν
            ("\u{0423}\u{0415}\u{0405}", opt_in("YES")),
            ("\u{0397}\u{0395}L\u{03A1}", help("HELP")), // Greek Η Ε, Latin L, Greek Ρ
            ("\u{03A5}\u{0395}S", opt_in("YES")),        // Greek Υ Ε       // У Е Ѕ
            // Full-width, mathematical, circled, squared, small capitals, superscript.
            ("\u{FF33}\u{FF34}\u{FF2F}\u{FF30}", out("STOP")), // ＳＴＯＰ
            ("\u{FF53}\u{FF54}\u{FF4F}\u{FF50}\u{FF01}", out("STOP")), // ｓｔｏｐ！
            ("\u{1D412}\u{1D413}\u{1D40E}\u{1D40F}", out("STOP")), // 𝐒𝐓𝐎𝐏
            ("\u{24E2}\u{24E3}\u{24DE}\u{24DF}", out("STOP")), // ⓢⓣⓞⓟ
            ("\u{1F182}\u{1F183}\u{1F17E}\u{1F17F}", out("STOP")), // 🆂🆃🅾🅿
            ("\u{1F142}\u{1F143}\u{1F13E}\u{1F13F}", out("STOP")), // 🅂🅃🄾🄿
            ("\u{A731}\u{1D1B}\u{1D0F}\u{1D18}", out("STOP")), // ꜱᴛᴏᴘ
            ("\u{02E2}\u{1D57}\u{1D52}\u{1D56}", out("STOP")), // ˢᵗᵒᵖ
            ("ST0P", out("STOP")),
            ("0PT0UT", out("OPTOUT")),
            // Accents and the non-English defaults.
            ("ARRET", out("ARRET")),
            ("ARR\u{00CA}T", out("ARRET")),  // ARRÊT
            ("arr\u{00EA}t", out("ARRET")),  // arrêt
            ("arre\u{0302}t", out("ARRET")), // arrêt, decomposed
            ("Arr\u{00EA}t svp", out("ARRET")),
            ("arr\u{00EA}t s'il vous pla\u{00EE}t", out("ARRET")),
            ("BAJA", out("BAJA")),
            ("baja por favor", out("BAJA")),
            ("ST\u{00D6}P", out("STOP")), // STÖP
            // Opt-out phrases anywhere in the message.
            ("Please stop texting me", out("stop texting me")),
            (
                "can you stop messaging me already",
                out("stop messaging me"),
            ),
            (
                "STOP SENDING ME MESSAGES!!!",
                out("stop sending me messages"),
            ),
            ("opt me out", out("opt me out")),
            (
                "Hi, please remove me from your list. Thanks",
                out("remove me from your list"),
            ),
            ("take me off your list", out("take me off your list")),
            ("Don't text me again", out("don't text me")),
            ("don\u{2019}t text me", out("don't text me")), // curly apostrophe
            ("dont text me", out("don't text me")),
            ("Do NOT contact me", out("do not contact me")),
            ("please unsubscribe me from this", out("unsubscribe me")),
            ("stop texting this number", out("stop texting")),
            ("Why won't you stop texting me", out("stop texting me")),
            ("Don't. Stop texting me.", out("stop texting me")),
            ("\u{0405}TOP TEXTING ME", out("stop texting me")),
            // Negated phrases: for review only.
            ("please don't stop texting me", maybe("stop texting me")),
            ("don't ever stop messaging me", maybe("stop messaging me")),
            ("never stop texting me", maybe("stop texting me")),
            ("I do not unsubscribe me", maybe("unsubscribe me")),
            // A keyword standing in a longer message: for review only.
            ("where is the bus stop?", maybe("STOP")),
            ("I want to cancel my order", maybe("CANCEL")),
            ("the end of the street", maybe("END")),
            ("don't stop", maybe("STOP")),
            ("do not stop", maybe("STOP")),
            ("I quit my job today", maybe("QUIT")),
            ("how do I opt out?", maybe("OPT OUT")),
            ("STOP 2", maybe("STOP")),
            ("STOP!!! I never signed up", maybe("STOP")),
            ("Cancel. I'll call to reschedule", maybe("CANCEL")),
            ("non\u{2013}stop", maybe("STOP")), // en dash separates, unlike a hyphen
            // A keyword inside another word: nothing.
            ("STOPPED by the store", NONE),
            ("unstoppable", NONE),
            ("non-stop", NONE),
            ("stopwatch", NONE),
            ("Stopwatch", NONE),
            ("ending", NONE),
            ("quitting", NONE),
            ("cancellation", NONE),
            ("stopp", NONE),
            ("ST OP", NONE),
            // Opt in.
            ("START", opt_in("START")),
            ("start!", opt_in("START")),
            ("Unstop", opt_in("UNSTOP")),
            ("yes", opt_in("YES")),
            ("Yes please", opt_in("YES")),
            ("Y E S", opt_in("YES")),
            ("yesss!!", opt_in("YES")),
            ("YES \u{1F44D}", opt_in("YES")),
            ("Yes I'll be there", NONE),
            ("start over", NONE),
            ("I said yes", NONE),
            // Help.
            ("HELP", help("HELP")),
            ("help?", help("HELP")),
            ("Info", help("INFO")),
            ("help me", help("HELP")),
            ("HELP START", opt_in("START")),
            ("I need help", NONE),
            // Precedence between kinds: opt-out > opt-in > help.
            ("STOP START", out("STOP")),
            ("yes stop", out("STOP")),
            ("stop help", out("STOP")),
            // Nothing at all.
            ("", NONE),
            ("   ", NONE),
            ("!!!", NONE),
            ("\u{200B}", NONE),
            ("please", NONE),
            ("Thanks, see you at 5", NONE),
            ("\u{0441}\u{0442}\u{043E}\u{043F}", NONE), // Russian стоп is no default keyword
        ];
        assert!(cases.len() >= 60);
        check(&Keywords::defaults(), &cases);
    }

    #[test]
    fn optout_per_app_extras() {
        let extras: Vec<String> = [
            "parar",
            "  no   more ",
            "D\u{00E9}sabonner",
            "\u{0421}\u{0422}\u{041E}\u{041F}",
            "\u{03A4}\u{0388}\u{039B}\u{039F}\u{03A3}",
            "",
            "!!",
        ]
        .map(String::from)
        .to_vec();
        let keywords = Keywords::defaults().with_extra_opt_out(&extras);
        let cases = [
            ("PARAR", out("PARAR")),
            ("parar por favor", out("PARAR")),
            ("No more please", out("NO MORE")),
            ("no more!!!", out("NO MORE")),
            ("I want no more", maybe("NO MORE")),
            ("desabonner", out("D\u{00C9}SABONNER")),
            ("D\u{00C9}SABONNER", out("D\u{00C9}SABONNER")),
            (
                "\u{0441}\u{0442}\u{043E}\u{043F}",
                out("\u{0421}\u{0422}\u{041E}\u{041F}"),
            ), // стоп
            // τέλος, typed in small letters with a final sigma, against the capitals ΤΈΛΟΣ.
            (
                "\u{03C4}\u{03AD}\u{03BB}\u{03BF}\u{03C2}",
                out("\u{03A4}\u{0388}\u{039B}\u{039F}\u{03A3}"),
            ),
            ("STOP", out("STOP")),
            ("nomore", NONE),
        ];
        check(&keywords, &cases);
        // The defaults alone know none of the extras.
        assert_eq!(classify("parar", &Keywords::defaults()), NONE);
        assert_eq!(classify("no more", &Keywords::default()), NONE);
    }

    #[test]
    fn optout_hostile_input_is_bounded() {
        let keywords = Keywords::defaults();
        // A long message that ends in a phrase; a huge run of zeros (two readings each);
        // marks and invisibles only; a long letter-spaced run.
        let long = format!("{} stop texting me", "hello there ".repeat(8_000));
        assert_eq!(classify(&long, &keywords), out("stop texting me"));
        assert_eq!(classify(&"0".repeat(100_000), &keywords), NONE);
        assert_eq!(
            classify(&"\u{0301}\u{200B}".repeat(10_000), &keywords),
            NONE
        );
        assert_eq!(classify(&"a ".repeat(50_000), &keywords), NONE);
        assert_eq!(classify(&"\u{0421}".repeat(1_000), &keywords), NONE);
    }

    #[test]
    fn optout_phrase_and_keyword_lists_fold_to_words() {
        // Every listed word must survive folding, or it could never match.
        for list in [
            DEFAULT_OPT_OUT,
            DEFAULT_OPT_IN,
            DEFAULT_HELP,
            OPT_OUT_PHRASES,
            FILLER,
            NEGATIONS,
        ] {
            assert_eq!(entries(list).len(), list.len());
        }
        // Every phrase opts out on its own and when negated becomes a review item.
        let keywords = Keywords::defaults();
        for phrase in OPT_OUT_PHRASES {
            let Intent::OptOut { .. } = classify(phrase, &keywords) else {
                panic!("{phrase:?} does not opt out");
            };
            let negated = format!("never {phrase}");
            assert_eq!(classify(&negated, &keywords), maybe(phrase), "{negated:?}");
        }
    }
}
