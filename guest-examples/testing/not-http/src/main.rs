fn main() {
    println!("I am a command, not an HTTP handler");
}
