//! mosix-restore: the static restorer that turns an image back into a
//! running process (DESIGN.md sections 3 and 5). The engine issue builds it.
fn main() {}
