use durable::workflow;

workflow! {
    onboard {
        map missing {
            step one;
        }
        map missing_too(max_concurrency = 2) {
            step two;
        }
        map misspelled(ovr = items) {
            step three;
        }
        map names(over = [a, b]) {
            step four;
        }
        map nested_list(over = [[1], 2, {"k": 1}]) {
            step four_again;
        }
        map empty_list(over = []) {
            step four_more;
        }
        map bracketed_field(over = [items]) {
            step four_once_more;
        }
        map odd_literals(over = [1u8, 'x', -"a", 1e400, 2 3]) {
            step four_last;
        }
        map untyped(over = [1, 2.5]) {
            step four_typed;
        }
        map quoted(over = "items") {
            step five;
        }
        map nested(over = order.items) {
            step six;
        }
        map flag(over) {
            step seven;
        }
    }
}

fn main() {}
