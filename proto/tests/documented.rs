//! Every service, method, message, field, oneof, enum and enum value of the API carries a
//! comment in its .proto file: the proxy and the controller are written against these
//! comments (and prost copies them into the generated Rust docs), so an undocumented item is
//! a gap in the contract.

use prost_types::source_code_info::Location;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto};

// Field numbers of descriptor.proto, which source locations use as path elements.
const FILE_MESSAGE_TYPE: i32 = 4;
const FILE_ENUM_TYPE: i32 = 5;
const FILE_SERVICE: i32 = 6;
const MESSAGE_FIELD: i32 = 2;
const MESSAGE_NESTED_TYPE: i32 = 3;
const MESSAGE_ENUM_TYPE: i32 = 4;
const MESSAGE_ONEOF: i32 = 8;
const ENUM_VALUE: i32 = 2;
const SERVICE_METHOD: i32 = 2;

struct Checker<'a> {
    file: &'a FileDescriptorProto,
    undocumented: Vec<String>,
}

impl Checker<'_> {
    fn location(&self, path: &[i32]) -> Option<&Location> {
        self.file.source_code_info.as_ref()?.location.iter().find(|location| location.path == path)
    }

    fn require(&mut self, path: &[i32], what: String) {
        let documented = self
            .location(path)
            .and_then(|location| location.leading_comments.as_deref())
            .is_some_and(|comment| !comment.trim().is_empty());
        if !documented {
            self.undocumented.push(format!("{}: {what}", self.file.name()));
        }
    }

    fn message(&mut self, message: &DescriptorProto, path: Vec<i32>) {
        self.require(&path, format!("message {}", message.name()));
        for (index, field) in message.field.iter().enumerate() {
            let field_path = [path.as_slice(), &[MESSAGE_FIELD, index as i32]].concat();
            self.require(&field_path, format!("field {}.{}", message.name(), field.name()));
        }
        for (index, oneof) in message.oneof_decl.iter().enumerate() {
            let oneof_path = [path.as_slice(), &[MESSAGE_ONEOF, index as i32]].concat();
            self.require(&oneof_path, format!("oneof {}.{}", message.name(), oneof.name()));
        }
        for (index, nested) in message.nested_type.iter().enumerate() {
            if nested.options.as_ref().is_some_and(|options| options.map_entry()) {
                continue; // a map field's synthetic entry type, documented by the field
            }
            self.message(nested, [path.as_slice(), &[MESSAGE_NESTED_TYPE, index as i32]].concat());
        }
        for (index, nested) in message.enum_type.iter().enumerate() {
            self.enumeration(nested, [path.as_slice(), &[MESSAGE_ENUM_TYPE, index as i32]].concat());
        }
    }

    fn enumeration(&mut self, enumeration: &EnumDescriptorProto, path: Vec<i32>) {
        self.require(&path, format!("enum {}", enumeration.name()));
        for (index, value) in enumeration.value.iter().enumerate() {
            let value_path = [path.as_slice(), &[ENUM_VALUE, index as i32]].concat();
            self.require(&value_path, format!("enum value {}", value.name()));
        }
    }
}

#[test]
fn every_item_of_the_api_is_documented() {
    let files = ["mesh/config/v1/config.proto", "mesh/ca/v1/ca.proto"];
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let descriptors = protox::compile(files, [root]).expect("the .proto files compile");
    let mut undocumented = Vec::new();
    let mut checked = 0;
    for file in descriptors.file.iter().filter(|file| files.contains(&file.name())) {
        let mut checker = Checker { file, undocumented: Vec::new() };
        for (index, message) in file.message_type.iter().enumerate() {
            checker.message(message, vec![FILE_MESSAGE_TYPE, index as i32]);
        }
        for (index, enumeration) in file.enum_type.iter().enumerate() {
            checker.enumeration(enumeration, vec![FILE_ENUM_TYPE, index as i32]);
        }
        for (index, service) in file.service.iter().enumerate() {
            checker.require(&[FILE_SERVICE, index as i32], format!("service {}", service.name()));
            for (method_index, method) in service.method.iter().enumerate() {
                let path = [FILE_SERVICE, index as i32, SERVICE_METHOD, method_index as i32];
                checker.require(&path, format!("rpc {}.{}", service.name(), method.name()));
            }
        }
        checked += 1;
        undocumented.extend(checker.undocumented);
    }
    assert_eq!(checked, files.len(), "both API files were checked");
    assert!(undocumented.is_empty(), "undocumented API items:\n{}", undocumented.join("\n"));
}
