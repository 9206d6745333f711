//! Generates the gRPC test service (`proto/echo.proto`) used by `tests/gorouter_grpc.rs`, with
//! the protoc binary shipped by `protoc-bin-vendored` (no system protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=proto/echo.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/echo.proto"], &["proto"])?;
    Ok(())
}
