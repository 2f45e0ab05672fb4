fn main() {
    println!("pystackd");
}
