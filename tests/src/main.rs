fn main() {
    println!("BULKHEAD-SUITE planned=0");
}
