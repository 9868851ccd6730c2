# Passed as -DCMAKE_PROJECT_INCLUDE=... by scripts/setup.sh when building against the ROS 2
# wheels from PyPI. Their exported `*__rosidl_generator_py` (and a few other) targets list include
# directories from the machine that built the wheels (/opt/python/cp311-cp311/...). CMake refuses
# imported targets with non-existent include paths at generate time, so at the end of configure
# we drop exactly those entries. Harmless on a real ROS install, where every path exists.
function(_xmask3d_drop_missing_includes)
  get_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  foreach(_target IN LISTS _targets)
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_kept "")
    set(_dropped FALSE)
    foreach(_dir IN LISTS _dirs)
      if(_dir MATCHES "^\\$<" OR EXISTS "${_dir}")
        list(APPEND _kept "${_dir}")
      else()
        set(_dropped TRUE)
      endif()
    endforeach()
    if(_dropped)
      set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_kept}")
    endif()
  endforeach()
endfunction()
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _xmask3d_drop_missing_includes)
