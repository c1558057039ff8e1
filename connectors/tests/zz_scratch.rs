#[test]
fn scratch() {
    let (w, h, n) = (96u32, 64u32, 17u32);
    let rgb: Vec<u8> = (0..(w*h*3*n) as usize).map(|i| ((i * 7 + i / 1000) % 251) as u8).collect();
    std::fs::write("/tmp/vf_probe.mp4", vidflow_connectors::encode_mp4(&rgb, w, h, n, 24.0).unwrap()).unwrap();
}
