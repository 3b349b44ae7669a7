//! `paddock-ns-jail`: the privileged setup of one namespace sandbox, then its pid 1.
//! Started only by Paddock's namespace backend; not meant to be run by hand.

fn main() {
    std::process::exit(paddock_ns::jail::main())
}
