//! ferray example: data-parallel training for `ferray train`. A network with one hidden layer
//! (tanh, then a sigmoid) learns to tell good red wines (quality >= 6) from 11 measurements of
//! the wine-quality data, which ships inside the component (`data/`). Every fifth row is held
//! out for the accuracy; the rest are shared among the group's workers by rank.
//!
//! Each `step` is one full-batch gradient step: every worker adds up the gradient of its rows,
//! one all-reduce sums the gradients, losses and row counts of the whole group, and every worker
//! makes the same update (momentum 0.9), so all hold the same weights.
//!
//! With `gpu`, the hidden layer's matrix products (the pre-activations X W1^T of all the
//! worker's rows at once, and the gradient dZ^T X of W1) run in a WGSL kernel
//! (`matmul.wgsl`) on the node's GPU; the rest stays on the CPU.

use std::cell::RefCell;
use std::time::Duration;

use ferray_sdk::gpu::{Buffer, Kernel, workgroups};
use ferray_sdk::{collective, train};

use exports::ferray_examples::train_wine::trainable::{
    Config, Guest, GuestLoopWorker, GuestWorker, Metrics,
};

wit_bindgen::generate!({ path: "wit", world: "train-wine" });

const DATA: &str = include_str!("../data/winequality-red.csv");
const MATMUL: &str = include_str!("matmul.wgsl");
const FEATURES: usize = 11;
const MOMENTUM: f32 = 0.9;
/// What a checkpoint starts with.
const MAGIC: &[u8; 8] = b"ferray-w";

struct Component;

impl Guest for Component {
    type Worker = Worker;
    type LoopWorker = LoopWorker;
}

/// The standardized rows: (features, label).
struct Data {
    train: Vec<([f32; FEATURES], f32)>,
    test: Vec<([f32; FEATURES], f32)>,
}

fn load() -> Data {
    let mut rows = Vec::new();
    for line in DATA.lines().skip(1) {
        let v: Vec<f32> = line
            .split(',')
            .filter_map(|x| x.trim().parse().ok())
            .collect();
        if v.len() != FEATURES + 1 {
            continue;
        }
        let mut x = [0f32; FEATURES];
        x.copy_from_slice(&v[..FEATURES]);
        rows.push((x, if v[FEATURES] >= 6.0 { 1.0 } else { 0.0 }));
    }
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (i, r) in rows.into_iter().enumerate() {
        if i % 5 == 0 {
            test.push(r)
        } else {
            train.push(r)
        }
    }
    // Standardized by the training rows' mean and deviation.
    let n = train.len() as f32;
    for f in 0..FEATURES {
        let mean = train.iter().map(|(x, _)| x[f]).sum::<f32>() / n;
        let var = train
            .iter()
            .map(|(x, _)| (x[f] - mean).powi(2))
            .sum::<f32>()
            / n;
        let sd = var.sqrt().max(1e-6);
        for (x, _) in train.iter_mut().chain(test.iter_mut()) {
            x[f] = (x[f] - mean) / sd;
        }
    }
    Data { train, test }
}

/// The network's shape and its weights in one vector: w1 (hidden x 11), b1 (hidden), w2
/// (hidden), b2 (1); with no hidden layer, w (11) and b (1).
#[derive(Clone, Copy)]
struct Shape {
    hidden: usize,
}

impl Shape {
    fn len(&self) -> usize {
        match self.hidden {
            0 => FEATURES + 1,
            h => h * FEATURES + h + h + 1,
        }
    }

    /// The probability that `x` is a good wine; with `grad`, adds the gradient of the log loss
    /// for label `y` to it. Returns (probability, loss).
    fn forward(
        &self,
        p: &[f32],
        x: &[f32; FEATURES],
        y: f32,
        grad: Option<&mut [f32]>,
    ) -> (f32, f32) {
        let h = self.hidden;
        let z;
        let mut act = Vec::new();
        if h == 0 {
            z = p[..FEATURES].iter().zip(x).map(|(w, x)| w * x).sum::<f32>() + p[FEATURES];
        } else {
            let (w1, rest) = p.split_at(h * FEATURES);
            let (b1, rest) = rest.split_at(h);
            let (w2, b2) = rest.split_at(h);
            act = (0..h)
                .map(|j| {
                    let s: f32 = w1[j * FEATURES..(j + 1) * FEATURES]
                        .iter()
                        .zip(x)
                        .map(|(w, x)| w * x)
                        .sum();
                    (s + b1[j]).tanh()
                })
                .collect();
            z = act.iter().zip(w2).map(|(a, w)| a * w).sum::<f32>() + b2[0];
        }
        let prob = 1.0 / (1.0 + (-z).exp());
        let eps = 1e-7;
        let loss = -(y * prob.max(eps).ln() + (1.0 - y) * (1.0 - prob).max(eps).ln());
        if let Some(g) = grad {
            let dz = prob - y;
            if h == 0 {
                for f in 0..FEATURES {
                    g[f] += dz * x[f];
                }
                g[FEATURES] += dz;
            } else {
                let w2 = &p[h * FEATURES + h..h * FEATURES + 2 * h];
                for j in 0..h {
                    g[h * FEATURES + h + j] += dz * act[j];
                    let da = dz * w2[j] * (1.0 - act[j] * act[j]);
                    for f in 0..FEATURES {
                        g[j * FEATURES + f] += da * x[f];
                    }
                    g[h * FEATURES + j] += da;
                }
                g[h * FEATURES + 2 * h] += dz;
            }
        }
        (prob, loss)
    }
}

/// `c = a * b` on the GPU (`matmul.wgsl`): an m x k by k x n product, each operand read
/// through its strides.
fn gpu_matmul(
    a: &Buffer,
    b: &Buffer,
    [m, n, k]: [usize; 3],
    strides: [usize; 4],
) -> ferray_sdk::gpu::Result<Vec<f32>> {
    let c = Buffer::zeroed::<f32>(m * n)?;
    let dims: Vec<u32> = [m, n, k, strides[0], strides[1], strides[2], strides[3], 0]
        .iter()
        .map(|&x| x as u32)
        .collect();
    let d = Buffer::uniform(&dims)?;
    let kernel = Kernel::new(MATMUL, "main")?;
    kernel.dispatch(&[a, b, &c, &d], [workgroups(m, 8), workgroups(n, 8), 1])?;
    c.read::<f32>()
}

impl Shape {
    /// What `forward` adds up over `rows`, with the hidden layer's products on the GPU: the
    /// gradient added to `grad`; returns the rows' summed loss.
    fn gradient_on_gpu(
        &self,
        p: &[f32],
        rows: &[&([f32; FEATURES], f32)],
        grad: &mut [f32],
    ) -> Result<f64, String> {
        let h = self.hidden;
        if h == 0 {
            return Err("`gpu` needs a hidden layer (`hidden` above 0)".into());
        }
        let m = rows.len();
        if m == 0 {
            return Ok(0.0);
        }
        let (w1, rest) = p.split_at(h * FEATURES);
        let (b1, rest) = rest.split_at(h);
        let (w2, b2) = rest.split_at(h);
        let x: Vec<f32> = rows.iter().flat_map(|(x, _)| x.iter().copied()).collect();
        let xb = Buffer::from_slice(&x).map_err(|e| e.to_string())?;
        // Z = X W1^T (m x h): X[i][l] = x[i * 11 + l], W1^T[l][j] = w1[j * 11 + l].
        let wb = Buffer::from_slice(w1).map_err(|e| e.to_string())?;
        let z = gpu_matmul(&xb, &wb, [m, h, FEATURES], [FEATURES, 1, 1, FEATURES])
            .map_err(|e| e.to_string())?;
        let mut dz1 = vec![0f32; m * h];
        let mut loss = 0f64;
        let eps = 1e-7;
        for (i, (_, y)) in rows.iter().enumerate() {
            let act: Vec<f32> = (0..h).map(|j| (z[i * h + j] + b1[j]).tanh()).collect();
            let out = act.iter().zip(w2).map(|(a, w)| a * w).sum::<f32>() + b2[0];
            let prob = 1.0 / (1.0 + (-out).exp());
            loss += f64::from(-(y * prob.max(eps).ln() + (1.0 - y) * (1.0 - prob).max(eps).ln()));
            let dz = prob - y;
            for j in 0..h {
                grad[h * FEATURES + h + j] += dz * act[j];
                let da = dz * w2[j] * (1.0 - act[j] * act[j]);
                dz1[i * h + j] = da;
                grad[h * FEATURES + j] += da;
            }
            grad[h * FEATURES + 2 * h] += dz;
        }
        // dW1 = dZ1^T X (h x 11): dZ1^T[j][i] = dz1[i * h + j], X[i][l] = x[i * 11 + l].
        let db = Buffer::from_slice(&dz1).map_err(|e| e.to_string())?;
        let gw1 = gpu_matmul(&db, &xb, [h, FEATURES, m], [1, h, FEATURES, 1])
            .map_err(|e| e.to_string())?;
        for (g, x) in grad[..h * FEATURES].iter_mut().zip(gw1) {
            *g += x;
        }
        Ok(loss)
    }
}

/// splitmix64, so that every worker makes the same initial weights from the seed.
fn init(shape: Shape, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let scale = match shape.hidden {
        0 => 0.1,
        _ => 1.0 / (FEATURES as f32).sqrt(),
    };
    (0..shape.len())
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

struct State {
    epoch: u32,
    restores: u32,
    params: Vec<f32>,
    velocity: Vec<f32>,
}

pub struct Worker {
    config: Config,
    shape: Shape,
    data: Data,
    state: RefCell<State>,
}

impl GuestWorker for Worker {
    fn new(config: Config) -> Self {
        let shape = Shape {
            hidden: config.hidden as usize,
        };
        let params = init(shape, config.seed.unwrap_or(1));
        let velocity = vec![0.0; params.len()];
        Worker {
            shape,
            data: load(),
            state: RefCell::new(State {
                epoch: 0,
                restores: 0,
                params,
                velocity,
            }),
            config,
        }
    }

    fn step(&self) -> Result<Metrics, String> {
        let mut st = self.state.borrow_mut();
        if self.config.crash_at == Some(st.epoch + 1) && st.restores == 0 {
            panic!(
                "crash-at: worker {} stops at step {}",
                collective::rank(),
                st.epoch + 1
            );
        }
        if let Some(ms) = self.config.step_ms {
            std::thread::sleep(Duration::from_millis(u64::from(ms)));
        }
        let (rank, world) = (
            collective::rank() as usize,
            collective::world_size() as usize,
        );
        let n = self.shape.len();
        // The gradient's sum over this worker's rows, then its loss and row count.
        let mut buf = vec![0f32; n + 2];
        let shard: Vec<&([f32; FEATURES], f32)> =
            self.data.train.iter().skip(rank).step_by(world).collect();
        let rows = shard.len() as u32;
        let loss = if self.config.gpu == Some(true) {
            self.shape
                .gradient_on_gpu(&st.params, &shard, &mut buf[..n])
                .map_err(|e| format!("GPU: {e}"))?
        } else {
            let mut loss = 0f64;
            for (x, y) in &shard {
                let (_, l) = self.shape.forward(&st.params, x, *y, Some(&mut buf[..n]));
                loss += f64::from(l);
            }
            loss
        };
        buf[n] = loss as f32;
        buf[n + 1] = rows as f32;
        collective::all_reduce(&mut buf).map_err(|e| e.to_string())?;
        let total = buf[n + 1];
        if total < 1.0 {
            return Err("no training rows in the group".into());
        }
        let lr = self.config.lr as f32;
        let State {
            params, velocity, ..
        } = &mut *st;
        for ((p, v), g) in params.iter_mut().zip(velocity.iter_mut()).zip(&buf[..n]) {
            *v = MOMENTUM * *v - lr * g / total;
            *p += *v;
        }
        st.epoch += 1;
        let right = self
            .data
            .test
            .iter()
            .filter(|(x, y)| (self.shape.forward(&st.params, x, *y, None).0 >= 0.5) == (*y >= 0.5))
            .count();
        Ok(Metrics {
            loss: f64::from(buf[n]) / f64::from(total),
            accuracy: right as f64 / self.data.test.len() as f64,
            epoch: st.epoch,
            rows,
            restores: st.restores,
        })
    }

    fn save(&self) -> Vec<u8> {
        let st = self.state.borrow();
        let mut out = Vec::with_capacity(16 + 8 * st.params.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&st.epoch.to_le_bytes());
        out.extend_from_slice(&(st.params.len() as u32).to_le_bytes());
        for x in st.params.iter().chain(&st.velocity) {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out
    }

    fn restore(&self, checkpoint: Vec<u8>) {
        let n = self.shape.len();
        let ok = checkpoint.len() == 16 + 8 * n
            && &checkpoint[..8] == MAGIC
            && u32::from_le_bytes(checkpoint[12..16].try_into().unwrap()) as usize == n;
        if !ok {
            panic!(
                "not a checkpoint of a network with {} hidden units",
                self.shape.hidden
            );
        }
        let floats: Vec<f32> = checkpoint[16..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let mut st = self.state.borrow_mut();
        st.epoch = u32::from_le_bytes(checkpoint[8..12].try_into().unwrap());
        st.params = floats[..n].to_vec();
        st.velocity = floats[n..].to_vec();
        st.restores += 1;
    }
}

/// The worker's steps in a loop of its own, reporting each.
pub struct LoopWorker(Worker);

impl GuestLoopWorker for LoopWorker {
    fn new(config: Config) -> Self {
        LoopWorker(Worker::new(config))
    }

    fn train_loop(&self) -> Result<(), String> {
        let w = &self.0;
        if let Some(c) = train::checkpoint() {
            w.restore(c);
        }
        let epochs = w.config.epochs.unwrap_or(100);
        let every = w.config.checkpoint_every.unwrap_or(1);
        while w.state.borrow().epoch < epochs {
            let m = w.step()?;
            let due = every > 0 && (m.epoch.is_multiple_of(every) || m.epoch == epochs);
            let checkpoint = due.then(|| w.save());
            let metrics = [
                ("loss", m.loss),
                ("accuracy", m.accuracy),
                ("epoch", f64::from(m.epoch)),
                ("rows", f64::from(m.rows)),
                ("restores", f64::from(m.restores)),
            ];
            train::report(&metrics, checkpoint.as_deref()).map_err(|e| e.to_string())?;
        }
        if w.config.extra_report_rank == Some(collective::rank()) {
            train::report(&[("extra", 1.0)], None).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

export!(Component);
