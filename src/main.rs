//! The `docker-delta` command.

fn main() {
    println!("docker-delta {}", docker_delta::VERSION);
}
