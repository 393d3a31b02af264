fn main() {
    eprintln!("flocker-chaos: not built yet");
    std::process::exit(2);
}
