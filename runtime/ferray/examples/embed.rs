//! The README's embedding example, kept compiling by `cargo test`:
//!
//! ```sh
//! cargo run -p ferray --example embed -- squares.wasm counter.wasm
//! ```

use ferray::Runtime;

#[tokio::main]
async fn main() -> Result<(), ferray::Error> {
    let mut args = std::env::args().skip(1);
    let (Some(squares_path), Some(counter_path)) = (args.next(), args.next()) else {
        eprintln!("usage: embed SQUARES.wasm COUNTER.wasm");
        std::process::exit(2);
    };
    let rt = Runtime::local().await?; // or Runtime::builder().num_cpus(4.0)...
    let squares = rt.load_file(&squares_path).await?; // content addressed: loading twice is free
    let refs = (0..10)
        .map(|i| squares.call("heavy-compute", (i as i64,)))
        .collect::<Result<Vec<_>, _>>()?;
    let values: Vec<i64> = rt.get_all(&refs).await?;

    let big = rt.put(&vec![0u8; 1 << 20]).await?; // an ObjectRef, ready at once
    let echoed = squares.task("heavy-compute").arg_ref(&refs[3]).submit()?; // a dependency
    assert_eq!(rt.get::<i64>(&echoed).await?, 81);

    let counter = rt.load_file(&counter_path).await?;
    let c = counter
        .actor("counter", (0i64,))
        .max_restarts(2)
        .spawn()
        .await?;
    let r = c.call("incr", (5i64,))?;
    assert_eq!(rt.get::<i64>(&r).await?, 5);
    let (ready, _not_ready) = rt.wait(&refs, 5, None).await;
    println!("{values:?}, {} ready, {:?}", ready.len(), big.content_id());
    Ok(())
}
