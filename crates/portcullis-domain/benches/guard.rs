//! What the guard's pure parts cost per message: `cargo bench -p portcullis-domain --bench
//! guard` prints nanoseconds per call. The end-to-end cost on `POST /v1/messages` is
//! measured by `scripts/bench-guard.sh` (docs/benchmarks.md).

use std::hint::black_box;
use std::time::Instant;

use portcullis_domain::content::LinkRules;
use portcullis_domain::policy::{AppPolicy, Counters, Inputs, Outgoing, Stage, Standing, decide};
use portcullis_domain::quiet_hours::{self, QuietRules};
use portcullis_domain::risk::RiskPrefixes;
use portcullis_domain::{Channel, E164, Purpose, segment_info};

fn time(name: &str, iters: u32, mut f: impl FnMut(u32)) {
    for i in 0..iters / 10 {
        f(i);
    }
    let started = Instant::now();
    for i in 0..iters {
        f(i);
    }
    let ns = started.elapsed().as_nanos() as f64 / f64::from(iters);
    println!("{name:<48} {ns:>10.0} ns");
}

fn main() {
    let numbers: Vec<String> = (0..1000)
        .map(|i| format!("+1415555{:04}", 2000 + i))
        .collect();
    let parsed: Vec<E164> = numbers.iter().map(|n| E164::parse(n).unwrap()).collect();
    let body = "Portcullis bench run message 17: your order has shipped.";
    let now: jiff::Timestamp = "2026-07-01T18:00:00Z".parse().unwrap();
    let rules = QuietRules::builtin();
    let risk = RiskPrefixes::builtin();
    let plain = AppPolicy {
        allowed_countries: Some(vec!["US".into()]),
        ..AppPolicy::default()
    };
    let full = AppPolicy {
        links: LinkRules {
            block_shorteners: true,
            blocked_domains: vec!["evil.com".into()],
        },
        opt_out_footer: Some("Reply STOP to opt out".into()),
        ..plain.clone()
    };
    time("E164::parse", 20_000, |i| {
        black_box(E164::parse(&numbers[i as usize % 1000]).unwrap());
    });
    time("E164::region", 20_000, |i| {
        black_box(parsed[i as usize % 1000].region());
    });
    time("RiskPrefixes::matching", 200_000, |i| {
        black_box(risk.matching(&parsed[i as usize % 1000]));
    });
    time(
        "quiet_hours::next_allowed (inside the window)",
        20_000,
        |i| {
            black_box(quiet_hours::next_allowed(
                &parsed[i as usize % 1000],
                now,
                rules,
            ));
        },
    );
    time("content::check_links (rules on)", 50_000, |_| {
        black_box(portcullis_domain::content::check_links(body, &full.links).ok());
    });
    time("AppPolicy::outgoing_text (footer on)", 50_000, |_| {
        black_box(full.outgoing_text(Purpose::Notification, body));
    });
    time("segment_info", 50_000, |_| {
        black_box(segment_info(body));
    });
    for (name, policy, purpose) in [
        (
            "decide: transactional, plain policy",
            &plain,
            Purpose::Transactional,
        ),
        (
            "decide: notification, every rule on",
            &full,
            Purpose::Notification,
        ),
    ] {
        time(name, 20_000, |i| {
            let to = &parsed[i as usize % 1000];
            let msg = Outgoing {
                purpose,
                channel: Channel::Sms,
                to,
                text: body,
                segments: 1,
                send_at: None,
            };
            black_box(decide(
                &msg,
                &Inputs {
                    policy,
                    standing: &Standing::default(),
                    counters: &Counters::default(),
                    pause: None,
                    rules,
                    risk,
                    now,
                },
                Stage::Accept,
            ));
        });
    }
}
