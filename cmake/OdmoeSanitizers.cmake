# -DODMOE_SANITIZER=address|undefined instruments every target of the project.
if(ODMOE_SANITIZER STREQUAL "address")
  add_compile_options($<$<COMPILE_LANGUAGE:C,CXX>:-fsanitize=address> $<$<COMPILE_LANGUAGE:C,CXX>:-fno-omit-frame-pointer>)
  add_link_options(-fsanitize=address)
elseif(ODMOE_SANITIZER STREQUAL "undefined")
  add_compile_options($<$<COMPILE_LANGUAGE:C,CXX>:-fsanitize=undefined> $<$<COMPILE_LANGUAGE:C,CXX>:-fno-sanitize-recover=all>
                      $<$<COMPILE_LANGUAGE:C,CXX>:-fno-omit-frame-pointer>)
  add_link_options(-fsanitize=undefined)
elseif(NOT ODMOE_SANITIZER STREQUAL "")
  message(FATAL_ERROR "ODMOE_SANITIZER must be 'address', 'undefined' or empty, not '${ODMOE_SANITIZER}'")
endif()
