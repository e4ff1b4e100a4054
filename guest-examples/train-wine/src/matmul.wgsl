// C = A * B for an m x k matrix A and a k x n matrix B, each read through
// strides (A[i][l] = a[i * sa0 + l * sa1], B[l][j] = b[l * sb0 + j * sb1]),
// so that one kernel also multiplies by a transpose. C is m x n, row-major.
struct Dims {
    m: u32, n: u32, k: u32, sa0: u32,
    sa1: u32, sb0: u32, sb1: u32, pad: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> d: Dims;

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    let j = id.y;
    if (i >= d.m || j >= d.n) {
        return;
    }
    var s = 0.0;
    for (var l = 0u; l < d.k; l++) {
        s += a[i * d.sa0 + l * d.sa1] * b[l * d.sb0 + j * d.sb1];
    }
    c[i * d.n + j] = s;
}
