// A plain copy, for `plt bench`'s copy-bandwidth measurement (the bandwidth a kernel gets reading
// and writing device memory, which the decode steps' weight streaming is compared with). No
// defines. Grid: (gx, gy) workgroups of 256 covering the buffer's vec4s, split over y past the
// x limit; one vec4 per invocation.

@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(256)
fn copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * 256u + lid;
    if (i < arrayLength(&src)) {
        dst[i] = src[i];
    }
}
