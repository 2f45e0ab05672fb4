// The daemon is not written yet: its OS layer is, and is unused until then.
#[allow(dead_code, unused_imports)]
mod platform;

fn main() {
    println!("pystackd");
}
