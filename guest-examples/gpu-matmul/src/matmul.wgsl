// C (m x n) = A (m x k) * B (k x n), row-major f32, in 16 x 16 tiles staged in workgroup memory.
// Dispatch ceil(n / 16) x ceil(m / 16) workgroups. Shared by the gpu-matmul guest example and
// the native benchmark (runtime/gpu/examples/matmul_bench.rs).

struct Params {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

const TILE: u32 = 16u;

var<workgroup> ta: array<array<f32, 16>, 16>;
var<workgroup> tb: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let row = wid.y * TILE + lid.y;
    let col = wid.x * TILE + lid.x;
    var acc = 0.0;
    let tiles = (p.k + TILE - 1u) / TILE;
    for (var t = 0u; t < tiles; t = t + 1u) {
        let ac = t * TILE + lid.x;
        let br = t * TILE + lid.y;
        var av = 0.0;
        if (row < p.m && ac < p.k) {
            av = a[row * p.k + ac];
        }
        var bv = 0.0;
        if (br < p.k && col < p.n) {
            bv = b[br * p.n + col];
        }
        ta[lid.y][lid.x] = av;
        tb[lid.y][lid.x] = bv;
        workgroupBarrier();
        for (var i = 0u; i < TILE; i = i + 1u) {
            acc = acc + ta[lid.y][i] * tb[i][lid.x];
        }
        workgroupBarrier();
    }
    if (row < p.m && col < p.n) {
        c[row * p.n + col] = acc;
    }
}
