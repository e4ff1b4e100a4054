//! WIT value types from fuzz bytes: nested records, variants, lists,
//! options, results, tuples, flags, enums, strings and scalars.

use wasm_wave::value::Type;

/// Types nest at most this deep, but for the chains of options and lists
/// that reach past the codec's limit.
const MAX_TYPE_DEPTH: usize = 6;
/// At most this many type nodes in one generated type.
const MAX_NODES: usize = 48;

/// A reader over fuzz bytes that never fails: past the end it reads zeros,
/// so every input makes some type.
#[derive(Debug)]
pub struct Input<'a> {
    data: &'a [u8],
    nodes: usize,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data, nodes: 0 }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.data
    }
}

/// Names as components may use them, WAVE's keywords among them (written
/// `%none` and so on in WAVE text).
const NAMES: &[&str] = &[
    "a", "b", "c", "name", "x-y", "f0", "ok", "err", "some", "none", "true", "false", "inf", "nan",
    "value-2", "z",
];

/// `n` distinct names, starting at a position the input chooses.
fn names(input: &mut Input<'_>, n: usize) -> Vec<String> {
    let start = usize::from(input.byte());
    (0..n)
        .map(|i| {
            let name = NAMES[(start + i) % NAMES.len()];
            match i / NAMES.len() {
                0 => name.to_string(),
                k => format!("{name}-n{k}"),
            }
        })
        .collect()
}

const SCALARS: [Type; 13] = [
    Type::BOOL,
    Type::S8,
    Type::U8,
    Type::S16,
    Type::U16,
    Type::S32,
    Type::U32,
    Type::S64,
    Type::U64,
    Type::F32,
    Type::F64,
    Type::CHAR,
    Type::STRING,
];

/// A type chosen by the next bytes of `input`.
pub fn gen_type(input: &mut Input<'_>) -> Type {
    input.nodes = 0;
    node(input, 0)
}

fn node(input: &mut Input<'_>, depth: usize) -> Type {
    input.nodes += 1;
    let b = input.byte();
    if depth >= MAX_TYPE_DEPTH || input.nodes >= MAX_NODES {
        return SCALARS[usize::from(b) % SCALARS.len()].clone();
    }
    let depth = depth + 1;
    let small = |input: &mut Input<'_>, max: u8| 1 + usize::from(input.byte() % max);
    let ty = match b % 27 {
        k @ 0..=12 => Some(SCALARS[usize::from(k)].clone()),
        13 | 14 => Some(Type::list(node(input, depth))),
        15 => Some(Type::list(Type::U8)),
        16 => Some(Type::option(node(input, depth))),
        17 => {
            let which = input.byte();
            let ok = (which & 1 != 0).then(|| node(input, depth));
            let err = (which & 2 != 0).then(|| node(input, depth));
            Some(Type::result(ok, err))
        }
        18 => {
            let n = small(input, 4);
            Type::tuple((0..n).map(|_| node(input, depth)).collect::<Vec<_>>())
        }
        19 | 20 => {
            let n = small(input, 5);
            let names = names(input, n);
            let fields: Vec<(String, Type)> =
                names.into_iter().map(|n| (n, node(input, depth))).collect();
            Type::record(fields)
        }
        21 | 22 => {
            let n = small(input, 6);
            let names = names(input, n);
            let cases: Vec<(String, Option<Type>)> = names
                .into_iter()
                .map(|n| {
                    let payload = input.byte() & 1 != 0;
                    (n, payload.then(|| node(input, depth)))
                })
                .collect();
            Type::variant(cases)
        }
        23 => {
            let n = small(input, 8);
            Type::enum_ty(names(input, n))
        }
        24 => {
            // Mostly a few flags; sometimes around the codec's 32.
            let b = input.byte();
            let n = if b & 0x80 != 0 {
                30 + usize::from(b % 6)
            } else {
                1 + usize::from(b % 8)
            };
            Type::flags(names(input, n))
        }
        26 => {
            // Rarely: options and lists nested around the codec's depth
            // limit (values nest as deep as their type).
            let levels = 100 + usize::from(input.byte() % 60);
            let shape = input.byte();
            let mut ty = SCALARS[usize::from(shape) % SCALARS.len()].clone();
            for level in 0..levels {
                ty = if shape >> (level % 8) & 1 == 0 {
                    Type::option(ty)
                } else {
                    Type::list(ty)
                };
            }
            Some(ty)
        }
        _ => {
            // Rarely: a fixed-length list, which the codec refuses.
            let n = input.byte();
            Some(if n & 1 == 0 {
                Type::fixed_length_list(node(input, depth), u32::from(n >> 1))
            } else {
                Type::list(node(input, depth))
            })
        }
    };
    // The constructors refuse only empty cases, which `small` never makes.
    ty.unwrap_or(Type::STRING)
}
