//! Values between host and guest: every kind of WIT type, through the
//! embedding API (Rust types via serde) and through the command line (WAVE).

// The scenarios are plain `async fn`s, run by `both.rs`'s tests: unwrap as
// in a `#[test]`.
#![allow(clippy::unwrap_used)]

use ferray::Runtime;
use serde::{Deserialize, Serialize};

use crate::both::scenarios;
use crate::{ferray_ok, fx, load};

// Through the embedding API: both embedded and on a cluster (`both.rs`).
scenarios![
    rich_types_round_trip_through_a_guest,
    large_byte_lists_and_integer_lists,
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Circle(f32),
    Square(u64),
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Color {
    Red,
    Green,
    Blue,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Rec {
    name: String,
    count: u32,
    tags: Vec<String>,
    shape: Shape,
    color: Color,
    /// flags: bit 0 read, bit 1 write, bit 2 exec
    perms: u32,
    maybe: Option<i32>,
    outcome: Result<u8, String>,
    pair: (char, f64),
    bytes: Vec<u8>,
}

async fn rich_types_round_trip_through_a_guest(rt: &Runtime) {
    let m = load(rt, fx::MISBEHAVE).await;
    let recs = [
        Rec {
            name: "x".into(),
            count: 3,
            tags: vec!["a".into(), "bé".into()],
            shape: Shape::Circle(1.5),
            color: Color::Green,
            perms: 0b101,
            maybe: Some(-7),
            outcome: Ok(9),
            pair: ('λ', -0.25),
            bytes: vec![0, 255, 1],
        },
        Rec {
            name: String::new(),
            count: u32::MAX,
            tags: vec![],
            shape: Shape::None,
            color: Color::Blue,
            perms: 0,
            maybe: None,
            outcome: Err("bad".into()),
            pair: ('a', f64::MAX),
            bytes: vec![],
        },
        Rec {
            name: "n".repeat(1000),
            count: 0,
            tags: vec!["t".into(); 50],
            shape: Shape::Square(u64::MAX),
            color: Color::Red,
            perms: 0b111,
            maybe: Some(i32::MIN),
            outcome: Ok(0),
            pair: ('\u{10FFFF}', 0.0),
            bytes: (0..=255).collect(),
        },
    ];
    for rec in recs {
        let r = m.call("echo-types", (rec.clone(),)).unwrap();
        assert_eq!(rt.get::<Rec>(&r).await.unwrap(), rec);
    }
}

async fn large_byte_lists_and_integer_lists(rt: &Runtime) {
    let m = load(rt, fx::MISBEHAVE).await;
    let big: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    let r = m.call("echo-bytes", (big.clone(),)).unwrap();
    assert_eq!(rt.get::<Vec<u8>>(&r).await.unwrap(), big);
    let xs: Vec<i64> = (-500..500).collect();
    let r = m.call("sum-list", (xs.clone(),)).unwrap();
    assert_eq!(rt.get::<i64>(&r).await.unwrap(), xs.iter().sum::<i64>());
}

#[test]
fn wave_on_the_command_line() {
    let out = ferray_ok(&[
        "run",
        fx::MISBEHAVE,
        "echo-types",
        r#"{name: "x", count: 3, tags: ["a"], shape: circle(1.5), color: green, perms: {read, exec}, maybe: some(-7), outcome: err("no"), pair: ('z', 2.5), bytes: [1, 2]}"#,
    ]);
    assert_eq!(
        out,
        "{name: \"x\", count: 3, tags: [\"a\"], shape: circle(1.5), color: green, perms: {read, exec}, maybe: some(-7), outcome: err(\"no\"), pair: ('z', 2.5), bytes: [1, 2]}\n"
    );
    assert_eq!(
        ferray_ok(&["run", fx::MISBEHAVE, "sum-list", "[1, 2, 3, -10]"]),
        "-4\n"
    );
    assert_eq!(
        ferray_ok(&["run", fx::MISBEHAVE, "env-var", "\"HOME\""]),
        "none\n"
    );
}
