//! The `wendelin` command-line tool.

fn main() {
    println!("wendelin");
}
